#!/bin/bash
# Step 55: GPUs for the GPU tests on a machine without GPU hardware.
#   * Character device nodes /dev/shj-gpu0..3 (mode 0666). Their major number (120) is one
#     devices.txt reserves for local/experimental use and no driver claims, so opening one fails
#     with ENXIO once the device cgroup let the open through, and with EPERM when Slurm's
#     ConstrainDevices denied it: tests tell "allowed" from "denied" by that. Slurm's gres.conf
#     (step 60) names them as the node's GPUs, as Slurm's own tests do with ordinary files.
#   * A CDI spec of kind example.com/gpu in /etc/cdi (the only directories Podman 4.3 reads)
#     shaped like `nvidia-ctk cdi generate` output: per GPU an index name ("0") and a UUID name
#     ("GPU-..."), both mounting that GPU's node, plus "all". Each node keeps its host path in
#     the container: rootless runtimes bind-mount device nodes from the container path.
# Device nodes live in devtmpfs: a reboot removes them, and this step puts them back.
set -euo pipefail
# shellcheck source=testbed/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/../lib.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root"

# A major number some driver registered since would make the nodes real devices.
if awk -v m="$TESTBED_GPU_MAJOR" '$1 == m' /proc/devices | grep -q .; then
    die "character major $TESTBED_GPU_MAJOR is taken on this host (/proc/devices); pick a free one in testbed/lib.sh"
fi

for ((i = 0; i < TESTBED_GPUS; i++)); do
    node="$TESTBED_GPU_PREFIX$i"
    if [[ -e "$node" ]] && [[ "$(stat -c '%F %t:%T' "$node")" != "character special file $(printf '%x:%x' "$TESTBED_GPU_MAJOR" "$i")" ]]; then
        rm -f -- "$node"
    fi
    if [[ ! -e "$node" ]]; then
        mknod -m 0666 "$node" c "$TESTBED_GPU_MAJOR" "$i"
        log "created $node (c $TESTBED_GPU_MAJOR:$i)"
    fi
    chmod 0666 "$node"
done

gpu_uuid() {
    printf 'GPU-5348a100-0000-4000-8000-%012d' "$1"
}

spec_devices() {
    local i all=""
    for ((i = 0; i < TESTBED_GPUS; i++)); do
        printf '    {"name": "%d", "containerEdits": {"deviceNodes": [{"path": "%s%d"}]}},\n' \
            "$i" "$TESTBED_GPU_PREFIX" "$i"
        printf '    {"name": "%s", "containerEdits": {"deviceNodes": [{"path": "%s%d"}]}},\n' \
            "$(gpu_uuid "$i")" "$TESTBED_GPU_PREFIX" "$i"
        all+="${all:+, }{\"path\": \"$TESTBED_GPU_PREFIX$i\"}"
    done
    printf '    {"name": "all", "containerEdits": {"deviceNodes": [%s]}}\n' "$all"
}

ensure_dir "$(dirname -- "$TESTBED_CDI_SPEC")" 0755
write_if_changed "$TESTBED_CDI_SPEC" 0644 <<EOF
{
  "cdiVersion": "0.5.0",
  "kind": "example.com/gpu",
  "containerEdits": {"env": ["SHJ_TESTBED_CDI=example.com/gpu"]},
  "devices": [
$(spec_devices)
  ]
}
EOF
if ((WRITE_CHANGED)); then
    log "wrote $TESTBED_CDI_SPEC"
fi
python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$TESTBED_CDI_SPEC" \
    || die "$TESTBED_CDI_SPEC is not valid JSON"
log "$TESTBED_GPUS fake GPUs $TESTBED_GPU_PREFIX[0-$((TESTBED_GPUS - 1))], CDI kind example.com/gpu"
