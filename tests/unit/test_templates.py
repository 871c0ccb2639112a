"""Path templates: only known placeholders, values that cannot walk out of their directory."""

from __future__ import annotations

import dataclasses

import pytest

from sh_jupyter.paths import (
    PLACEHOLDERS,
    TemplateContext,
    check_path_template,
    expand_path,
    placeholders_in,
)

SID = "0b7e4c1a-3f2d-4e5a-9b8c-1d2e3f4a5b6c"
CTX = TemplateContext(user="alice", home="/home/alice", uid=1234, session_id=SID, job_id="42")


def test_expand_every_placeholder() -> None:
    template = "/x/{user}/{uid}/{session_id}/{job_id}"
    assert expand_path(template, CTX) == f"/x/alice/1234/{SID}/42"
    assert expand_path("{home}/.local/share/ondemand/apps/jupyter_app", CTX) == \
        "/home/alice/.local/share/ondemand/apps/jupyter_app"


def test_expand_the_default_scratch_template() -> None:
    assert expand_path("/var/tmp/sh-jupyter-{user}/scratch/{session_id}", CTX) == \
        f"/var/tmp/sh-jupyter-alice/scratch/{SID}"


def test_expand_normalises() -> None:
    ctx = dataclasses.replace(CTX, home="/home/alice/")
    assert expand_path("{home}/./data//x/", ctx) == "/home/alice/data/x"


def test_expand_without_placeholders() -> None:
    assert expand_path("/safe_data", CTX) == "/safe_data"


def test_values_with_dots_dashes_underscores_are_safe() -> None:
    ctx = dataclasses.replace(CTX, user="a.b-c_d", job_id="123_4")
    assert expand_path("/s/{user}/{job_id}", ctx) == "/s/a.b-c_d/123_4"


@pytest.mark.parametrize("field", ["user", "session_id", "job_id"])
@pytest.mark.parametrize("value", ["../x", "a/b", "..", ".", "", "/abs", "a b", "a\x00b",
                                   "a\nb", "$(id)", "~root"])
def test_unsafe_values_are_rejected(field: str, value: str) -> None:
    ctx = dataclasses.replace(CTX, **{field: value})
    with pytest.raises(ValueError, match=field):
        expand_path(f"/base/{{{field}}}", ctx)


@pytest.mark.parametrize("field", ["user", "session_id", "job_id"])
def test_unsafe_values_are_rejected_even_when_unused(field: str) -> None:
    ctx = dataclasses.replace(CTX, **{field: "../x"})
    with pytest.raises(ValueError):
        expand_path("/safe_data", ctx)


@pytest.mark.parametrize("field", ["user", "session_id", "job_id"])
def test_trailing_newline_is_not_a_safe_value(field: str) -> None:
    # `re.match(r"^...$")` also matches before a final "\n": the newline would end up in a path.
    ctx = dataclasses.replace(CTX, **{field: "abc\n"})
    with pytest.raises(ValueError):
        expand_path(f"/base/{{{field}}}", ctx)


@pytest.mark.parametrize("home", ["home/alice", "", "/home/../etc", "/home/alice/..", "~alice"])
def test_home_must_be_absolute(home: str) -> None:
    ctx = dataclasses.replace(CTX, home=home)
    with pytest.raises(ValueError, match="home"):
        expand_path("{home}/x", ctx)


def test_placeholders_in() -> None:
    assert placeholders_in("/a/{user}/{home}/{user}") == {"user", "home"}
    assert placeholders_in("/plain") == set()
    assert placeholders_in("{{literal}}/{uid}") == {"uid"}


@pytest.mark.parametrize(
    "template",
    ["/x/{project}", "/x/{USER}", "/x/{}", "/x/{0}", "/x/{uid:05d}", "/x/{user!r}",
     "/x/{user.upper}", "/x/{home[0]}", "/x/{user", "/x/user}"],
)
def test_unknown_placeholder_or_spec_rejected(template: str) -> None:
    with pytest.raises(ValueError):
        placeholders_in(template)
    with pytest.raises(ValueError):
        check_path_template(template)


def test_error_lists_allowed_placeholders() -> None:
    with pytest.raises(ValueError) as info:
        placeholders_in("/x/{project}")
    assert "{project}" in str(info.value)
    for name in PLACEHOLDERS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("template", "names"),
    [("/var/tmp/{user}", {"user"}), ("{home}/x", {"home"}), ("{home}", {"home"}),
     ("/run/user/{uid}/sh-jupyter", {"uid"}), ("/", set())],
)
def test_check_path_template_accepts(template: str, names: set[str]) -> None:
    assert check_path_template(template) == names


@pytest.mark.parametrize(
    "template",
    ["relative", "{user}/x", "./x", "/a/../b", "{home}/..", "/..", "", "~/x"],
)
def test_check_path_template_rejects(template: str) -> None:
    with pytest.raises(ValueError):
        check_path_template(template)
