"""Session requests are checked against the site's caps before anything is submitted."""

from __future__ import annotations

import pytest

from sh_jupyter import config
from sh_jupyter.errors import UsageError
from sh_jupyter.submitter.request import validate
from sh_jupyter.submitter.submission import sbatch_options

CFG = config.parse("[limits]\nmax_cpus = 8\nmax_memory_gib = 32\nmax_gpus = 2\n")


def test_defaults_come_from_the_config():
    req = validate(CFG)
    assert (req.cpus, req.memory_gib, req.walltime, req.gpus) == (1, 4, 6 * 3600, 0)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"cpus": "9"}, "--cpus"), ({"cpus": "0"}, "--cpus"), ({"cpus": "1.5"}, "--cpus"),
    ({"memory_gib": "33"}, "--memory"), ({"walltime": "6:00:01"}, "--time"),
    ({"walltime": "7-0"}, "--time"), ({"walltime": "x"}, "--time"), ({"gpus": "3"}, "--gpus"),
    ({"partition": "a b"}, "--partition"), ({"cluster": "-x"}, "--cluster"),
])
def test_bad_requests_name_the_flag(kwargs, field):
    with pytest.raises(UsageError) as err:
        validate(CFG, **kwargs)
    assert err.value.field == field and str(next(iter(kwargs.values()))) in str(err.value)


def test_sbatch_options_carry_the_request_and_never_a_generated_script():
    req = validate(CFG, cpus="4", memory_gib="16", walltime="90", partition="gpu", gpus="1")
    opts = sbatch_options(CFG, req, "/h/s/abc")
    assert "--job-name=jupyter_app" in opts and "--chdir=/h/s/abc" in opts
    assert "--output=/h/s/abc/output.log" in opts and "--time=01:30:00" in opts
    assert "--cpus-per-task=4" in opts and "--mem=16G" in opts and "--no-requeue" in opts
    assert "--partition=gpu" in opts and "--gres=gpu:1" in opts
    assert not any(o.startswith("--export") for o in opts)
    site = config.parse("", "/etc/other/config.toml")
    assert "--export=ALL,SH_JUPYTER_CONFIG=/etc/other/config.toml" in sbatch_options(
        site, req, "/h/s/abc")


def test_gpus_where_the_site_allows_none_say_so():
    with pytest.raises(UsageError) as err:
        validate(config.default(), gpus="1")
    assert err.value.field == "--gpus" and "limits.max_gpus = 0" in str(err.value)
    assert validate(config.default(), gpus="0").gpus == 0


@pytest.mark.parametrize("nodes", ["node1", "node2.shj.test", "node[1-4,7],gpu01", "cn[01-16]"])
def test_a_session_can_be_aimed_at_nodes(nodes):
    req = validate(CFG, nodelist=nodes)
    assert f"--nodelist={nodes}" in sbatch_options(CFG, req, "/h/s/abc")


@pytest.mark.parametrize("nodes", ["node1;id", "-x", "node[1-", "a b", "node1,,node2", "n[a-b]",
                                   "x" * 1100])
def test_a_node_list_is_slurm_names_and_nothing_else(nodes):
    with pytest.raises(UsageError) as err:
        validate(CFG, nodelist=nodes)
    assert err.value.field == "--nodelist"


def test_no_node_list_no_option():
    assert not any(o.startswith("--nodelist") for o in sbatch_options(CFG, validate(CFG), "/x"))
