"""squeue's three answer shapes (22.05 text, 22.05 JSON, 24.11 JSON) give the same jobs; the
question asked is filtered on the server on every version; only definite answers say "gone"."""

from __future__ import annotations

import os

import pytest

from sh_jupyter.errors import SchedulerUnavailable, SessionFailure
from sh_jupyter.slurm import squeue
from sh_jupyter.slurm import squeue_text as slurm_text
from sh_jupyter.slurm.jobs import JobInfo
from sh_jupyter.slurm.squeue_json import parse_jobs

DATA = os.path.join(os.path.dirname(__file__), "data")
V2205, V2302, V2405, V2411 = (22, 5, 8), (23, 2, 0), (24, 5, 0), (24, 11, 3)


def data(name: str) -> str:
    with open(os.path.join(DATA, name), encoding="utf-8") as fh:
        return fh.read()


# -- the three shapes -----------------------------------------------------------------------
def test_captured_2205_text_is_read_field_by_field():
    jobs = {j.job_id: j for j in slurm_text.parse_text(data("squeue-22.05.txt"))}
    assert sorted(jobs, key=int) == ["37", "41", "42", "43", "44", "45"]
    assert jobs["43"] == JobInfo("43", "probe3", "shjuser2", "RUNNING", "None", "vm",
                                 1795910640, 1795910641, 300)
    held = jobs["41"]
    assert held.name == "probe|name with space"  # the name is last: it may hold the separator
    assert (held.state, held.reason, held.node, held.start_time, held.time_limit) == \
        ("PENDING", "JobHeldUser", "", 0, 600)  # start N/A; "10:00" is 10 minutes
    assert jobs["42"].time_limit == 86400 and jobs["45"].time_limit == 0  # UNLIMITED
    assert jobs["37"].time_limit == 6 * 3600 and jobs["37"].finished
    assert jobs["44"].state == "COMPLETED" and jobs["44"].finished and not held.finished


def _same(job: JobInfo) -> tuple:
    """What the card uses (the text form carries no exit code)."""
    return (job.job_id, job.name, job.user, job.state, job.reason, job.node, job.submit_time,
            job.start_time, job.time_limit)


def test_captured_2411_json_and_text_give_the_same_jobs():
    text = {j.job_id: j for j in slurm_text.parse_text(data("squeue-24.11.txt"))}
    new = {j.job_id: j for j in parse_jobs(data("squeue-24.11.json"), user="shjuser2")}
    assert {k: _same(v) for k, v in text.items()} == {k: _same(v) for k, v in new.items()}
    assert sorted(new) == ["20", "21", "22"] and new["20"].name == "probe|name with space"
    assert (new["20"].state, new["20"].reason, new["20"].time_limit, new["20"].start_time) == \
        ("PENDING", "JobHeldUser", 600, 0)
    assert new["21"].reason.startswith("Nodes required for job are DOWN")
    assert new["22"].submit_time == 1795912396 and new["22"].exit_code == 0


def test_all_shapes_give_the_same_running_and_finished_jobs():
    ids = {"41", "43", "44"}
    text = {j.job_id: _same(j) for j in slurm_text.parse_text(data("squeue-22.05.txt"))
            if j.job_id in ids}
    old = {j.job_id: _same(j) for j in parse_jobs(data("squeue-22.05.json"), user="shjuser2")}
    new = {j.job_id: _same(j)
           for j in parse_jobs(data("squeue-24.11-schema.json"), user="shjuser2")}
    assert text == old == new and set(text) == ids


def test_json_is_filtered_here_by_id_and_by_user_name_or_uid():
    for name in ("squeue-22.05.json", "squeue-24.11-schema.json"):
        assert [j.job_id for j in parse_jobs(data(name), user="shjbench")] == ["46"]
        assert [j.job_id for j in parse_jobs(data(name), user="1004")] == ["46"]
        assert [j.job_id for j in parse_jobs(data(name), job_ids={"43"})] == ["43"]
        assert parse_jobs(data(name), job_ids={"99"}) == []


def test_text_that_is_not_ours_is_refused_and_odd_lines_are_skipped():
    with pytest.raises(ValueError):
        slurm_text.parse_text("JOBID PARTITION NAME\n")
    assert slurm_text.parse_text("") == []
    text = "7|RUNNING|None|n1|10|20|1:00:00|alice|odd\nname continued\n"
    assert [j.name for j in slurm_text.parse_text(text)] == ["odd"]


# -- the question ---------------------------------------------------------------------------
def test_one_job_and_one_user_are_asked_for_by_name_on_every_version():
    for version in (V2205, V2302, V2411, None):
        one = squeue.plan(version, ["12"])
        assert "--jobs=12" in one.argv and "-u" not in one.argv and "-t" in one.argv
        mine = squeue.plan(version, user="1001")
        assert mine.argv[mine.argv.index("-u") + 1] == "1001" and "--jobs" not in \
            " ".join(mine.argv)


def test_json_only_where_the_server_filters_it():
    assert squeue.plan(V2205, ["12"]).form == "text"  # 22.05: --json dumps the whole queue
    assert squeue.plan(V2205, user="alice").form == "text"
    assert squeue.plan(None, ["12"]).form == "text"  # unknown version: the form all know
    for version in (V2302, V2405, V2411):
        assert squeue.plan(version, ["12"]).form == "json"
        assert squeue.plan(version, ["12", "13"], user="alice").form == "json"
        # several ids and no user: 23.02-24.05.0 would dump everything in JSON
        assert squeue.plan(version, ["12", "13"]).form == "text"


def test_text_form_asks_for_epoch_times_and_the_fixed_format():
    q = squeue.plan(V2205, ["13", "12", "12"], user="alice", cluster_args=["-M", "c2"])
    assert q.argv == ("squeue", "-M", "c2", "-h", "-o", slurm_text.FORMAT, "-t", "all",
                      "-u", "alice", "--jobs=12,13")
    assert q.env == {"SLURM_TIME_FORMAT": "%s"} and q.job_ids == {"12", "13"}


def test_never_the_whole_queue_and_only_job_ids():
    with pytest.raises(ValueError):
        squeue.plan(V2205)
    with pytest.raises(ValueError):
        squeue.plan(V2205, ["12,13"])
    with pytest.raises(ValueError):
        squeue.plan(V2205, ["local"])


def test_parse_version():
    assert squeue.parse_version("slurm-wlm 22.05.8\n") == (22, 5, 8)
    assert squeue.parse_version("slurm 24.11.3") == (24, 11, 3)
    assert squeue.parse_version("slurm 25.05") == (25, 5, 0)
    assert squeue.parse_version("command not found") is None


# -- the answer: definite or unknown (stderr texts captured from 22.05; 24.11 says the same) ----
NO_JOB = "slurm_load_jobs error: Invalid job id specified\n"
DOWN = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n"
NO_USER = "squeue: error: Invalid user: nosuchuser\n\n"
LINE = "41|PENDING|JobHeldUser||1795910640|N/A|10:00|shjuser2|probe\n"


def test_a_single_job_refused_as_invalid_is_definitely_gone():
    q = squeue.plan(V2205, ["999999"])
    assert squeue.read(q, 1, "", NO_JOB) == []


def test_missing_ids_of_a_successful_answer_are_gone():
    q = squeue.plan(V2205, ["41", "999999"], user="shjuser2")
    assert [j.job_id for j in squeue.read(q, 0, LINE, "")] == ["41"]


@pytest.mark.parametrize(("ids", "user", "code", "out", "err"), [
    (["41"], None, 1, "", DOWN),  # controller down (22.05 took 18 s to say so)
    (["41", "42"], None, 1, "", NO_JOB),  # "invalid" is definite only for a single id
    ([], "nosuchuser", 0, "", NO_USER),  # exit 0, nothing listed, an error
    (["41"], None, 0, "garbage that is no squeue line\n", ""),
    (["41"], None, 137, "", ""),  # killed
])
def test_anything_else_is_unknown_never_gone(ids, user, code, out, err):
    q = squeue.plan(V2205, ids, user=user)
    with pytest.raises(SchedulerUnavailable) as exc:
        squeue.read(q, code, out, err)
    assert not isinstance(exc.value, SessionFailure)  # "unknown" is not a kind of "failed"


def test_json_answers_with_errors_or_broken_json_are_unknown():
    q = squeue.plan(V2411, ["43"])
    with pytest.raises(SchedulerUnavailable):
        squeue.read(q, 0, '{"jobs": [], "errors": [{"error": "boom"}]}', "")
    with pytest.raises(SchedulerUnavailable):
        squeue.read(q, 0, '{"jobs": [', "")
    assert [j.state for j in squeue.read(q, 0, data("squeue-24.11-schema.json"), "")] == \
        ["RUNNING"]


def test_2411_unknown_user_is_unknown_too():
    """24.11: exit 0, an empty job list with a warning, and the error on stderr (captured)."""
    q = squeue.plan(V2411, user="nosuchuser")
    empty = ('{"jobs": [], "errors": [], "warnings": [{"description": "Zero jobs to dump", '
             '"source": ""}]}')
    with pytest.raises(SchedulerUnavailable):
        squeue.read(q, 0, empty, NO_USER)
    assert squeue.read(squeue.plan(V2411, ["999999"]), 1, "", NO_JOB) == []


def test_an_error_next_to_a_complete_answer_does_not_hide_it():
    q = squeue.plan(V2205, ["41"])
    assert [j.job_id for j in squeue.read(q, 0, LINE, "squeue: error: something odd\n")] == \
        ["41"]
