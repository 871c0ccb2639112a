"""Session identity, secret, status model, connection file and URLs."""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from sh_jupyter import config, session
from sh_jupyter.errors import UsageError
from sh_jupyter.session import (
    PHASES,
    Status,
    check_connect_host,
    connect_host,
    connection_yaml,
    container_name,
    is_session_id,
    lab_url,
    new_secret,
    new_session_id,
    running_message,
)

SID = "0b7e4c1a-3f2d-4e5a-9b8c-1d2e3f4a5b6c"


# --- ids and secrets -----------------------------------------------------------------------

def test_new_session_id_is_a_uuid4() -> None:
    sid = new_session_id()
    parsed = uuid.UUID(sid)
    assert str(parsed) == sid
    assert parsed.version == 4
    assert is_session_id(sid)


def test_new_session_ids_differ() -> None:
    ids = {new_session_id() for _ in range(100)}
    assert len(ids) == 100


@pytest.mark.parametrize(
    "text",
    ["", "notauuid", SID[:-1], SID + "0", SID.replace("-", ""), "{" + SID + "}",
     SID.replace("0", "g", 1), " " + SID, SID + " ", "../" + SID, SID[:8] + "/" + SID[9:]],
)
def test_is_session_id_rejects(text: str) -> None:
    assert not is_session_id(text)


def test_is_session_id_rejects_trailing_newline() -> None:
    # `re.match(r"^...$")` accepts "<uuid>\n"; the id becomes a directory and container name.
    assert not is_session_id(SID + "\n")


def test_is_session_id_accepts() -> None:
    assert is_session_id(SID)
    assert is_session_id(str(uuid.uuid1()))


def test_secret_is_long_and_url_safe() -> None:
    secret = new_secret()
    assert len(secret) >= 32
    assert re.fullmatch(r"[A-Za-z0-9_-]+", secret), secret


def test_secrets_are_unique() -> None:
    secrets_seen = {new_secret() for _ in range(200)}
    assert len(secrets_seen) == 200


def test_container_name_and_running_message() -> None:
    name = container_name("epcc-ces-jupyter", SID)
    assert name == f"epcc-ces-jupyter-{SID}"
    assert running_message(name) == \
        f"JupyterLab is running in Podman container epcc-ces-jupyter-{SID}"


def test_now_iso_is_utc_and_current() -> None:
    stamp = datetime.fromisoformat(session.now_iso())
    assert stamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - stamp) < timedelta(seconds=5)


# --- status --------------------------------------------------------------------------------

def full_status() -> Status:
    return Status(
        session_id=SID, phase="Running", job_id="42", created_at="2026-01-01T00:00:00+00:00",
        started_at="2026-01-01T00:00:05+00:00", ready_at="2026-01-01T00:00:09+00:00",
        ended_at="", host="node1", port=23456, base_url="/x/", container=f"p-{SID}",
        message="hello \"quoted\"\nnext", failed=False, reason="", cpus=4, memory_gib=8,
        walltime=21600, connection_timeout=180, extra={"a": [1, 2], "b": {"c": None}},
    )


def test_status_defaults() -> None:
    st = Status(session_id=SID)
    assert st.phase == "Queued" == PHASES[0]
    assert st.failed is False
    assert st.reason == ""
    assert st.extra == {}


def test_status_json_round_trip() -> None:
    st = full_status()
    text = st.to_json()
    assert text.endswith("\n")
    assert Status.from_json(text) == st


def test_status_json_is_plain_sorted_json() -> None:
    data = json.loads(full_status().to_json())
    assert list(data) == sorted(data)
    assert data["session_id"] == SID
    assert data["port"] == 23456
    assert data["phase"] == "Running"
    assert data["extra"] == {"a": [1, 2], "b": {"c": None}}
    assert set(data) == {f.name for f in dataclasses.fields(Status)}


def test_status_from_json_ignores_unknown_keys() -> None:
    data = json.loads(full_status().to_json())
    data["added_in_a_later_version"] = 1
    assert Status.from_json(json.dumps(data)) == full_status()


def test_status_from_json_fills_missing_keys_with_defaults() -> None:
    st = Status.from_json(json.dumps({"session_id": SID, "phase": "Starting"}))
    assert st == Status(session_id=SID, phase="Starting")


def test_status_extra_is_not_shared() -> None:
    a, b = Status(session_id=SID), Status(session_id=SID)
    a.extra["x"] = 1
    assert b.extra == {}


def test_advance_through_all_phases() -> None:
    st = Status(session_id=SID)
    st = st.advance("Starting", started_at="t1")
    assert (st.phase, st.started_at) == ("Starting", "t1")
    st = st.advance("Running", port=20001, host="n1")
    assert (st.phase, st.port, st.host, st.started_at) == ("Running", 20001, "n1", "t1")
    st = st.advance("Completed", ended_at="t3")
    assert (st.phase, st.ended_at, st.failed) == ("Completed", "t3", False)


def test_advance_to_the_same_phase_is_allowed() -> None:
    st = Status(session_id=SID, phase="Running").advance("Running", message="still")
    assert (st.phase, st.message) == ("Running", "still")


def test_advance_returns_a_copy() -> None:
    st = Status(session_id=SID)
    st.advance("Running")
    assert st.phase == "Queued"


@pytest.mark.parametrize(("current", "target"),
                         [("Starting", "Queued"), ("Running", "Starting"),
                          ("Completed", "Running"), ("Completed", "Queued")])
def test_advance_refuses_going_backwards(current: str, target: str) -> None:
    with pytest.raises(ValueError, match=f"{current} to {target}"):
        Status(session_id=SID, phase=current).advance(target)


def test_advance_to_an_unknown_phase() -> None:
    with pytest.raises(ValueError):
        Status(session_id=SID).advance("Paused")


@pytest.mark.parametrize("phase", PHASES)
def test_fail_from_any_phase(phase: str) -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    st = Status(session_id=SID, phase=phase, port=1).fail("container exited with status 1")
    assert st.phase == "Completed"
    assert st.failed is True
    assert st.reason == "container exited with status 1"
    assert st.port == 1
    assert datetime.fromisoformat(st.ended_at) >= before


def test_fail_keeps_an_existing_end_time() -> None:
    st = Status(session_id=SID, phase="Running", ended_at="2026-01-01T00:00:00+00:00")
    assert st.fail("x").ended_at == "2026-01-01T00:00:00+00:00"


# --- connection.yml ------------------------------------------------------------------------

def parse_connection(text: str) -> dict[str, object]:
    """A strict reader for the three-key file: one `key: scalar` per line, nothing else.

    Strings must be double-quoted scalars; they are read as JSON, whose escapes YAML's
    double-quoted style shares. Anything else (extra lines, a bare value) fails.
    """
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    out: dict[str, object] = {}
    for line in lines:
        match = re.fullmatch(r"([a-z]+): (.*)", line)
        assert match, f"not a key line: {line!r}"
        key, raw = match.groups()
        assert key not in out, f"duplicate key {key}"
        if raw.startswith('"'):
            decoder = json.JSONDecoder()
            value, end = decoder.raw_decode(raw)
            assert end == len(raw), f"trailing text after string in {line!r}"
            assert isinstance(value, str)
        else:
            assert re.fullmatch(r"[0-9]+", raw), f"bare value {raw!r}"
            value = int(raw)
        out[key] = value
    return out


def test_connection_yaml_plain() -> None:
    text = connection_yaml("node1.cluster", 23456, "s3cret")
    assert text == 'host: "node1.cluster"\nport: 23456\npassword: "s3cret"\n'
    assert parse_connection(text) == {"host": "node1.cluster", "port": 23456,
                                      "password": "s3cret"}


def test_connection_yaml_with_real_secret() -> None:
    secret = new_secret()
    assert parse_connection(connection_yaml("n", 20000, secret))["password"] == secret


@pytest.mark.parametrize(
    "hostile",
    [
        'evil"\nport: 1\npassword: "x',
        "a: b",
        "line1\nline2\r\nline3",
        'quote " and \\ backslash',
        "#comment",
        "- item",
        "{flow: map}",
        "&anchor *alias !tag",
        "'single'",
        "tab\there",
        "unicode é ü 中 \u2028 \u2029 \x85",
        "\x00\x07\x1b",
        "",
        "true",
        "123",
    ],
)
def test_connection_yaml_survives_hostile_values(hostile: str) -> None:
    text = connection_yaml(hostile, 8888, hostile)
    assert text.count("\n") == 3
    parsed = parse_connection(text)
    assert list(parsed) == ["host", "port", "password"]
    assert parsed == {"host": hostile, "port": 8888, "password": hostile}
    # Only printable ASCII and the three line ends: no raw control characters (which YAML
    # loaders refuse) and no raw Unicode line separators (which YAML 1.1 treats as breaks).
    assert all(c == "\n" or " " <= c <= "~" for c in text), repr(text)


def test_connection_yaml_port_is_an_integer() -> None:
    assert parse_connection(connection_yaml("h", "20001", "p"))["port"] == 20001  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        connection_yaml("h", "1\npassword: x", "p")  # type: ignore[arg-type]


# --- URLs ----------------------------------------------------------------------------------

def test_lab_url_without_token() -> None:
    assert lab_url("node1", 23456, "/") == "http://node1:23456/lab"


def test_lab_url_with_token() -> None:
    assert lab_url("node1", 23456, "/", "tok") == "http://node1:23456/lab?token=tok"


def test_lab_url_with_base_url() -> None:
    assert lab_url("node1", 8888, "/node/node1/8888/") == "http://node1:8888/node/node1/8888/lab"
    assert lab_url("node1", 8888, "/node/node1/8888/", "t") == \
        "http://node1:8888/node/node1/8888/lab?token=t"


def test_lab_url_empty_token_means_none() -> None:
    assert lab_url("h", 1, "/", "") == "http://h:1/lab"


@pytest.mark.parametrize(("template", "node", "hostname", "host"), [
    ("", "node2", "node2.shj.test", "node2.shj.test"),  # what the node calls itself
    ("{node}", "node2", "node2.shj.test", "node2"),  # Slurm's name for it
    ("{node}.ib", "node2", "node2.shj.test", "node2.ib"),  # another network's name
    ("{hostname}", "node2", "node2.shj.test", "node2.shj.test"),
    ("{node}", "", "cn7.site.org", "cn7"),  # --local: no Slurm node name, the short hostname
    ("portal-gw.site.org", "node2", "node2", "portal-gw.site.org"),
])
def test_the_connect_host_is_a_name_or_a_template_of_one(template, node, hostname, host):
    assert check_connect_host(template) is None
    assert connect_host(template, node, hostname) == host


@pytest.mark.parametrize("template", ["{user}.ib", "{node", "node 1", "http://x/", "a/b"])
def test_a_bad_connect_host_is_refused_by_the_config(template):
    assert check_connect_host(template)
    with pytest.raises(UsageError) as err:
        config.parse(f'[network]\nconnect_host = "{template}"\n')
    assert "network.connect_host" in str(err.value)


def test_container_storage_is_node_local_by_default():
    """A home directory shared between nodes must not hold Podman's storage: another node's
    Podman would read this node's container records (and fail on them)."""
    assert config.default()["podman.graphroot"].startswith("/var/tmp/")
