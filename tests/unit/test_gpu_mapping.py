"""Which CDI devices are a job's GPUs (pure): the renumbering pitfalls of GPU indices,
and every doubt failing closed."""

from __future__ import annotations

import pytest

from sh_jupyter.gpu.mapping import (
    Device,
    GpuMismatch,
    Job,
    Node,
    NodeId,
    NvmlGpu,
    choose,
    container_environment,
    parse_job_gpus,
    rules_allow,
)

KIND = "nvidia.com/gpu"
VARS = ("CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL")


def nid(minor: int) -> NodeId:
    return NodeId("c", 195, minor)


def uuid(i: int) -> str:
    return f"GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd"


def dev(name: str, *minors: int, problem: str = "") -> Device:
    return Device(KIND, name, tuple(Node(f"/dev/nvidia{m}", nid(m), problem) for m in minors))


def node_spec(n: int = 4, index_order: tuple[int, ...] | None = None) -> list[Device]:
    """What `nvidia-ctk cdi generate` writes for an n-GPU node: per GPU an index name and a
    UUID name with the same node, and `all`. Index names follow the generating machine's NVML
    order (`index_order[i]` is the minor of index i)."""
    order = index_order or tuple(range(n))
    devices = [dev(str(i), m) for i, m in enumerate(order)]
    devices += [dev(uuid(m), m) for m in range(n)]
    return [*devices, dev("all", *range(n))]


def job(ids: str, allowed: set[int] | None, n_nodes: int = 4, **kw) -> Job:
    """A job holding SLURM_JOB_GPUS=ids whose device cgroup lets it open `allowed` minors
    (None: no constraint at all)."""
    denied = frozenset() if allowed is None else \
        frozenset(nid(m) for m in range(n_nodes) if m not in allowed)
    return Job(parse_job_gpus(ids), denied=denied, **kw)


# --- the container's own view ---------------------------------------------------------------

def test_no_gpus_means_no_devices_and_the_nvidia_hook_disarmed() -> None:
    out = choose(Job(()), node_spec(), KIND, VARS)
    assert out.names == ()
    assert out.environment == {"NVIDIA_VISIBLE_DEVICES": "void"}


def test_no_gpus_needs_no_specs_at_all() -> None:
    assert choose(Job(()), [], KIND, VARS).count == 0


def test_container_view_is_numbered_from_zero_whatever_the_host_ids() -> None:
    env = container_environment(3, VARS)
    assert env == {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": "0,1,2",
                   "GPU_DEVICE_ORDINAL": "0,1,2"}


# --- indices lie ----------------------------------------------------------------------------

def test_renumbered_cuda_visible_devices_is_not_used_as_a_name() -> None:
    # ConstrainDevices=yes: Slurm gives GPU 2 and renumbers CUDA_VISIBLE_DEVICES to 0.
    j = job("2", {2}, visible="0")
    out = choose(j, node_spec(), KIND, VARS)
    assert out.names == (f"{KIND}={uuid(2)}",)  # not nvidia.com/gpu=0
    assert out.environment["CUDA_VISIBLE_DEVICES"] == "0"


def test_slurm_global_id_is_not_used_as_a_cdi_index_name() -> None:
    # The spec was generated in NVML order, which differs from Slurm's GRES order: CDI "0" is
    # /dev/nvidia1 and CDI "1" is /dev/nvidia0. Slurm's GPU 0 is /dev/nvidia0.
    devices = [d for d in node_spec(2, index_order=(1, 0)) if not d.name.startswith("GPU-")]
    out = choose(job("0", {0}, n_nodes=2), devices, KIND, VARS)
    assert out.names == (f"{KIND}=1",)  # the node proves it; the index would be wrong


def test_non_contiguous_allocation_becomes_zero_to_n_minus_one() -> None:
    out = choose(job("1,3", {1, 3}, visible="0,1"), node_spec(), KIND, VARS)
    assert out.names == (f"{KIND}={uuid(1)}", f"{KIND}={uuid(3)}")
    assert out.environment["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert out.environment["GPU_DEVICE_ORDINAL"] == "0,1"


def test_job_without_constraint_but_one_gpu_visible_variable_unrenumbered() -> None:
    # Without ConstrainDevices Slurm leaves CUDA_VISIBLE_DEVICES=3 (host numbering): the count
    # matches, and the container still sees its GPU as 0.
    out = choose(job("3", {3}, visible="3"), node_spec(), KIND, VARS)
    assert out.environment["CUDA_VISIBLE_DEVICES"] == "0"


def test_uuid_names_are_preferred_and_nvml_confirms_them() -> None:
    nvml = (NvmlGpu(uuid(2), nid(2)),)  # inside the constrained job NVML shows one GPU
    out = choose(job("2", {2}, nvml=nvml), node_spec(), KIND, VARS)
    assert out.names == (f"{KIND}={uuid(2)}",)


def test_exact_nvml_uuid_beats_a_uuid_looking_name() -> None:
    devices = [dev("GPU-ffffffff-0000", 0), dev(uuid(0), 0)]
    out = choose(job("0", {0}, n_nodes=1, nvml=(NvmlGpu(uuid(0), nid(0)),)), devices, KIND)
    assert out.names == (f"{KIND}={uuid(0)}",)


def test_index_names_are_used_when_the_spec_has_no_other_name() -> None:
    devices = [d for d in node_spec() if not d.name.startswith("GPU-")]
    assert choose(job("1", {1}), devices, KIND).names == (f"{KIND}=1",)


def test_all_is_never_chosen_even_for_a_job_holding_every_gpu() -> None:
    out = choose(job("0,1,2,3", None, visible="0,1,2,3", confined=True), node_spec(), KIND,
                 VARS)
    assert out.count == 4 and f"{KIND}=all" not in out.names


def test_a_job_holding_every_gpu_is_refused_nothing_but_must_be_seen_confined() -> None:
    out = choose(job("0", None, n_nodes=1, confined=True), node_spec(1), KIND)
    assert out.names == (f"{KIND}={uuid(0)}",)


def test_an_unconfined_job_is_refused_even_when_the_count_fits() -> None:
    # No ConstrainDevices: the job holds GPU 0 of two, the spec lacks GPU 0 and lists GPU 1.
    # Everything opens and the count fits, yet GPU 1 is another job's.
    lacking = [dev(uuid(1), 1)]
    for confined in (False, None):
        with pytest.raises(GpuMismatch, match="nothing shows that Slurm confines this job"):
            choose(job("0", None, n_nodes=2, confined=confined), lacking, KIND)
    # NVML seeing both GPUs openable gives it away as well.
    nvml = (NvmlGpu(uuid(0), nid(0)), NvmlGpu(uuid(1), nid(1)))
    with pytest.raises(GpuMismatch, match="NVML shows 2"):
        choose(job("0", None, n_nodes=2, nvml=nvml), lacking, KIND)


# --- failing closed -------------------------------------------------------------------------

def test_spec_missing_the_allocated_gpu_fails_and_says_why() -> None:
    devices = [d for d in node_spec() if "2" not in d.name and d.name != "all"]
    devices = [d for d in devices if nid(2) not in d.identities()]
    with pytest.raises(GpuMismatch) as info:
        choose(job("2", {2}), devices, KIND)
    msg = str(info.value)
    assert "SLURM_JOB_GPUS=2" in msg and "only 0 CDI device(s)" in msg
    assert "lack this job's GPU" in msg and "/dev/nvidia0" in msg  # what it was offered


def test_without_constraint_a_shared_node_fails_instead_of_guessing() -> None:
    with pytest.raises(GpuMismatch) as info:
        choose(job("1", None, visible="1"), node_spec(), KIND)
    assert "ConstrainDevices=yes" in str(info.value)
    assert "4 GPUs" in str(info.value)


def test_no_device_of_the_kind_names_where_it_looked() -> None:
    with pytest.raises(GpuMismatch) as info:
        choose(job("0", {0}), [], KIND, searched="/etc/cdi and /var/run/cdi")
    assert "no CDI device of kind nvidia.com/gpu in /etc/cdi and /var/run/cdi" in str(info.value)


@pytest.mark.parametrize(("ids", "visible", "word"), [
    ("0,1", "0", "disagree"),
    ("0", "NoDevFiles", "without device files"),
])
def test_slurm_variables_that_disagree_fail(ids: str, visible: str, word: str) -> None:
    with pytest.raises(GpuMismatch, match=word):
        choose(job(ids, {0, 1}, visible=visible), node_spec(), KIND)


@pytest.mark.parametrize("text", ["0,x", "1,1", "0-3", "gpu:1"])
def test_malformed_slurm_job_gpus_fails(text: str) -> None:
    with pytest.raises(GpuMismatch, match="SLURM_JOB_GPUS"):
        parse_job_gpus(text)


def test_empty_slurm_job_gpus_is_no_gpus() -> None:
    assert parse_job_gpus("") == () and parse_job_gpus(None) == ()
    assert parse_job_gpus("0,3") == ("0", "3")


def test_a_device_with_a_problem_is_never_chosen_and_is_named() -> None:
    devices = [dev(uuid(0), 0, problem="hostPath /dev/nvidia3 is another node"),
               dev(uuid(1), 1)]
    with pytest.raises(GpuMismatch) as info:
        choose(job("0", {0}, n_nodes=2), devices, KIND)
    assert "unusable" in str(info.value) and "hostPath /dev/nvidia3" in str(info.value)


def test_a_device_without_nodes_cannot_be_a_gpu() -> None:
    devices = [Device(KIND, "env-only", ()), dev(uuid(0), 0)]
    out = choose(job("0", {0}, n_nodes=1, confined=True), devices, KIND)
    assert out.names == (f"{KIND}={uuid(0)}",)


def test_partly_shared_nodes_fail() -> None:
    # A MIG slice: the parent's node plus a capability node the job may also open.
    caps = NodeId("c", 237, 12)
    slice_ = Device(KIND, "0:0", (Node("/dev/nvidia0", nid(0)), Node("/dev/nvidia-caps/12", caps)))
    gpu0 = Device(KIND, "0", (Node("/dev/nvidia0", nid(0)), Node("/dev/dri/card1",
                                                                  NodeId("c", 226, 1))))
    with pytest.raises(GpuMismatch, match="share"):
        choose(job("0", {0}, n_nodes=1), [gpu0, slice_], KIND)


def test_a_gpu_with_a_drm_node_everyone_may_open_is_still_told_apart() -> None:
    # nvidia-ctk adds /dev/dri nodes to each GPU; Slurm does not constrain them.
    def gpu(i: int) -> Device:
        return Device(KIND, uuid(i), (Node(f"/dev/nvidia{i}", nid(i)),
                                      Node(f"/dev/dri/card{i + 1}", NodeId("c", 226, i + 1))))
    out = choose(job("1", {1}, n_nodes=2), [gpu(0), gpu(1)], KIND)
    assert out.names == (f"{KIND}={uuid(1)}",)


# --- NVML as a second witness ---------------------------------------------------------------

def test_nvml_showing_a_different_count_fails() -> None:
    # The device cgroup lets the job open GPU 1, but NVML (the driver) sees no GPU there.
    with pytest.raises(GpuMismatch, match="NVML shows 0"):
        choose(job("1", {1}, nvml=()), node_spec(), KIND)


def test_nvml_gpu_that_no_cdi_device_mounts_fails() -> None:
    nvml = (NvmlGpu(uuid(1), nid(1)), NvmlGpu(uuid(7), nid(7)))
    denied = frozenset(nid(m) for m in (0, 2, 3))
    with pytest.raises(GpuMismatch):
        choose(Job(("1", "7"), denied=denied, nvml=nvml), node_spec(), KIND)


def test_nvml_gpus_the_job_may_not_open_are_not_its_own() -> None:
    nvml = tuple(NvmlGpu(uuid(m), nid(m)) for m in range(4))  # NVML not filtered by the cgroup
    out = choose(job("3", {3}, nvml=nvml), node_spec(), KIND)
    assert out.names == (f"{KIND}={uuid(3)}",)


# --- cgroup v1 devices.list -----------------------------------------------------------------

@pytest.mark.parametrize(("rules", "allowed"), [
    (["c 195:1 rwm"], True),
    (["c 195:* rw"], True),
    (["a *:* rwm"], True),
    (["c 195:1 r"], False),
    (["c 195:1 r", "c 195:1 w"], True),
    (["b 195:1 rwm"], False),
    (["c 195:2 rwm", "c 1:3 rwm"], False),
    ([], False),
])
def test_devices_list_rules(rules: list[str], allowed: bool) -> None:
    assert rules_allow(rules, nid(1)) is allowed


def test_devices_list_when_it_lists_decides_with_the_probe() -> None:
    rules = ("c 1:3 rwm", "c 195:1 rwm", "c 195:255 rwm")
    out = choose(Job(("1",), device_rules=rules), node_spec(), KIND)
    assert out.names == (f"{KIND}={uuid(1)}",)
    # The list allows it but the open was refused: refused wins.
    with pytest.raises(GpuMismatch):
        choose(Job(("1",), device_rules=rules, denied=frozenset({nid(1)})), node_spec(), KIND)
