"""A launcher's options and secrets (pure parts and the 0600 file hand-over)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from sh_jupyter import config
from sh_jupyter.container.spec import SessionFacts, environment, jupyter_command
from sh_jupyter.errors import SessionFailure, UsageError
from sh_jupyter.launch import (
    ENV_FILE,
    LaunchOptions,
    check_env,
    from_dict,
    take_env,
    validate,
    write_env,
)
from sh_jupyter.paths import TemplateContext


def test_defaults_change_nothing_and_round_trip():
    assert from_dict(None) == LaunchOptions() == validate()
    opts = validate(["jupyterhub-singleuser"], "/user/alice/", "launcher")
    assert from_dict(opts.to_dict()) == opts


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"command": "jupyter lab"}, "command"),
    ({"command": ["ok", ""]}, "command"),
    ({"command": ["a\0b"]}, "command"),
    ({"base_url": "user/x"}, "base_url"),
    ({"base_url": "/u/{user}/"}, "base_url"),
    ({"auth": "none"}, "auth"),
])
def test_bad_options_name_the_field(kwargs, field):
    with pytest.raises(UsageError) as err:
        validate(**kwargs)
    assert err.value.field == field


def test_unknown_recorded_keys_are_refused():
    with pytest.raises(UsageError, match="unknown keys"):
        from_dict({"command": [], "shell": "bash"})


def test_environment_cannot_override_ours_or_be_odd():
    assert check_env({"JUPYTERHUB_API_TOKEN": "t"}) == {"JUPYTERHUB_API_TOKEN": "t"}
    for bad in ({"JUPYTER_TOKEN": "x"}, {"HOME": "/x"}, {"1X": "y"}, {"A-B": "y"},
                {"X": 1}, {"X": "a\0b"}):
        with pytest.raises(UsageError):
            check_env(bad)


def test_secrets_file_is_private_and_gone_once_taken(tmp_path):
    write_env(str(tmp_path), {"JUPYTERHUB_API_TOKEN": "s3cret"})
    path = tmp_path / ENV_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert take_env(str(tmp_path)) == {"JUPYTERHUB_API_TOKEN": "s3cret"}
    assert not path.exists() and take_env(str(tmp_path)) == {}
    write_env(str(tmp_path), {})
    assert not path.exists()


def test_a_tampered_secrets_file_fails_the_session_and_is_still_deleted(tmp_path):
    path = tmp_path / ENV_FILE
    for text in ("not json", "[1]", json.dumps({"JUPYTER_TOKEN": "x"})):
        path.write_text(text, encoding="utf-8")
        with pytest.raises(SessionFailure):
            take_env(str(tmp_path))
        assert not path.exists()


def test_spec_takes_the_launchers_command_and_environment():
    cfg = config.default()
    cmd = jupyter_command(cfg, 20001, "/user/a/", ("jupyterhub-singleuser",))
    assert cmd[0] == "jupyterhub-singleuser" and "--port=20001" in cmd
    assert "--ServerApp.base_url=/user/a/" in cmd
    facts = SessionFacts(TemplateContext("a", "/home/a", 1000, "s", "1"), 20001,
                         extra_env={"JUPYTERHUB_API_TOKEN": "t"})
    env = environment(cfg, facts, {}, [])
    assert env["JUPYTERHUB_API_TOKEN"] == "t" and "JUPYTER_TOKEN" not in env
