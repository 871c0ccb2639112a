"""`sh-jupyter doctor` on the real test bed, whole and deliberately broken."""

from __future__ import annotations

import json
import os
import pwd
import re

import bed

USER = bed.USERS[1]


def _doctor(config: str | None = None) -> tuple[int, dict[str, dict]]:
    argv = [bed.SH, *(["--config", config] if config else []), "doctor", "--json"]
    out = bed.as_user(USER, argv)
    data = json.loads(out.stdout)
    assert data["status"] == out.returncode
    return out.returncode, {f["check"]: f for f in data["findings"]}


def test_doctor_passes_on_the_test_bed(testbed):
    code, findings = _doctor()
    assert code == 0, [f for f in findings.values() if f["status"] != "ok"]
    assert {"podman", "subuid", "runtime-dir", "storage", "image", "prolog", "epilog"} \
        <= set(findings)


def test_doctor_names_each_problem_and_its_fix(testbed):
    empty_store = bed.shared_tempdir()
    cfg = bed.write_config(f'[image]\nstore = "{empty_store}"\n')
    runtime = f"/run/user/{pwd.getpwnam(USER).pw_uid}"
    moved = runtime + ".doctor-test"
    tun_mode = os.stat("/dev/net/tun").st_mode & 0o777
    os.rename(runtime, moved)
    os.chmod("/dev/net/tun", 0o600)
    try:
        code, findings = _doctor(cfg)
    finally:
        os.chmod("/dev/net/tun", tun_mode)
        os.rename(moved, runtime)
    assert code == 2
    image, rdir, tun = findings["image"], findings["runtime-dir"], findings["dev-net-tun"]
    assert image["status"] == "error" and empty_store in image["message"]
    assert "--store" in image["fix"]
    assert rdir["status"] == "error" and f"{runtime} does not exist" in rdir["message"]
    assert "mkdir -m 0700" in rdir["fix"]
    assert tun["status"] == "error" and "mode 600" in tun["message"]
    assert tun["fix"].startswith("chmod 0666 /dev/net/tun")
    assert _doctor()[0] == 0  # and the bed is whole again


GPU_SITE = '[limits]\nmax_gpus = 2\n[gpu]\ncdi_kind = "example.com/gpu"\n'


def test_doctor_checks_the_gpu_set_up(testbed):
    code, findings = _doctor(bed.write_config(GPU_SITE))
    assert code == 0, [f for f in findings.values() if f["status"] != "ok"]
    assert findings["cdi"]["status"] == "ok" and "CDI devices of kind example.com/gpu" \
        in findings["cdi"]["message"] and "reads spec versions up to" in findings["cdi"]["message"]
    assert findings["gpu-cgroup"]["status"] == "ok"
    assert _doctor()[1]["gpu"]["message"] == "GPU sessions are off (limits.max_gpus = 0)"


def test_doctor_names_a_bad_or_unreadable_spec(testbed):
    specs = bed.shared_tempdir()
    bad = os.path.join(specs, "site.json")
    with open(bad, "w", encoding="utf-8") as fh:
        json.dump({"cdiVersion": "9.0.0", "kind": "example.com/gpu", "devices": []}, fh)
    os.chmod(bad, 0o644)
    code, findings = _doctor(bed.write_config(GPU_SITE + f'cdi_spec_dirs = ["{specs}"]\n'))
    assert code == 2
    # Podman before 5.5 (Debian 12 and 13) reads only /etc/cdi and /var/run/cdi.
    assert findings["cdi-dirs"]["status"] == "error"
    assert re.fullmatch(rf"CDI spec {re.escape(bad)} is version 9\.0\.0, but Podman [0-9.]+ "
                        r"reads CDI specs up to [0-9.]+ only", findings["cdi"]["message"])
    os.chmod(bad, 0o600)
    code, findings = _doctor(bed.write_config(GPU_SITE + f'cdi_spec_dirs = ["{specs}"]\n'))
    assert findings["cdi-access"]["status"] == "error" and bad in findings["cdi-access"]["message"]
    assert findings["cdi"]["message"].startswith(f"CDI spec {bad} cannot be read")
