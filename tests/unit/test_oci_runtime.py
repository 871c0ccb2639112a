"""The OCI runtime choice (pure): crun where it can run, because it keeps the user's groups."""

from __future__ import annotations

import pytest

from sh_jupyter.container.oci_runtime import (
    GROUPS_LOST_OFF,
    GROUPS_LOST_RUNC,
    NodeFacts,
    cgroup_mode,
    choose,
    crun_refusal,
)
from sh_jupyter.errors import SessionFailure

BOTH_V1 = NodeFacts(crun="/usr/bin/crun", runc="/usr/bin/runc", cgroup="v1")
HYBRID = NodeFacts(crun="/usr/bin/crun", runc="/usr/bin/runc", cgroup="hybrid")
NO_CRUN = NodeFacts(crun="", runc="/usr/bin/runc", cgroup="v2")


@pytest.mark.parametrize(("v2", "unified", "mode"), [
    ("cpu memory pids\n", None, "v2"),
    ("", None, "v2"),  # a v2 root with no controllers is still v2
    (None, "hugetlb\n", "hybrid"),  # this bed before the hugetlb step
    (None, "\n", "v1"),  # hybrid with an empty cgroup2: crun accepts it
    (None, None, "v1"),
])
def test_cgroup_mode(v2, unified, mode):
    assert cgroup_mode(v2, unified) == mode


def test_auto_takes_crun_where_it_runs_and_keeps_groups():
    choice = choose("auto", True, BOTH_V1)
    assert (choice.runtime, choice.keep_groups, choice.warning) == ("crun", True, "")
    assert "keep-groups" in choice.why


def test_auto_falls_back_to_runc_and_says_groups_are_lost():
    for facts, why in ((HYBRID, "hybrid"), (NO_CRUN, "not installed")):
        choice = choose("auto", True, facts)
        assert (choice.runtime, choice.keep_groups) == ("runc", False)
        assert why in choice.why and choice.warning == GROUPS_LOST_RUNC


def test_runc_by_choice_warns_only_when_groups_were_wanted():
    assert choose("runc", True, BOTH_V1).warning == GROUPS_LOST_RUNC
    assert choose("runc", False, BOTH_V1).warning == ""
    assert 'podman.runtime is "runc"' in choose("runc", True, BOTH_V1).why


def test_crun_without_keep_groups_says_so():
    choice = choose("crun", False, BOTH_V1)
    assert (choice.runtime, choice.keep_groups, choice.warning) == ("crun", False,
                                                                    GROUPS_LOST_OFF)


def test_forced_crun_that_cannot_run_fails_with_the_reason():
    with pytest.raises(SessionFailure, match="hybrid"):
        choose("crun", True, HYBRID)
    with pytest.raises(SessionFailure, match="not installed"):
        choose("crun", True, NO_CRUN)


def test_no_runtime_at_all():
    with pytest.raises(SessionFailure, match="runc is not installed"):
        choose("auto", True, NodeFacts(crun="", runc="", cgroup="v1"))
    assert crun_refusal(BOTH_V1) == ""
