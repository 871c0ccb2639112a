"""Sessions across the cluster's hosts: submitted on login, running on node1 or node2, followed
and reached from login, cleaned up on the node that ran them, surviving another node's crash.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess

import bed
import cluster_bed as cb

U1, U2 = bed.USERS


def _api_ok(conn: dict) -> bool:
    """JupyterLab answers its token at the printed URL, asked from login."""
    base = f"http://{conn['host']}:{conn['port']}"
    return cb.http_status(f"{base}/api/status", token=conn["password"]) == 200


def test_two_users_land_on_two_nodes_and_are_reached_from_login(cfg, cleanup):
    sub1, card1 = cb.submit(U1, cfg, cleanup, "--nodelist", "node1", "--time", "15")
    sub2, card2 = cb.submit(U2, cfg, cleanup, "-w", "node2", "--time", "15")
    assert (cb.job_node(sub1["job_id"]), cb.job_node(sub2["job_id"])) == ("node1", "node2")
    for user, sub, card, node in ((U1, sub1, card1, "node1"), (U2, sub2, card2, "node2")):
        assert card["status"] == "Running" and card["host"] == node, card
        # The card, read on login, is what the supervisor wrote on the node (one home).
        again = cb.card(user, sub["session_id"], cfg)
        assert again["host"] == node and again["status"] == "Running", again
        conn = cb.connection(user, sub["session_id"], cfg)
        assert conn["host"] == cb.HOSTNAME[node], conn  # the default: what the node calls itself
        assert conn["url"].startswith(f"http://{cb.HOSTNAME[node]}:{conn['port']}/"), conn
        assert card["connect_url"] == conn["url"]
        # The printed URL answers from login (a name login resolves, an address it reaches),
        # with the token; without it JupyterLab refuses.
        assert _api_ok(conn), conn
        assert cb.http_status(f"http://{conn['host']}:{conn['port']}/api/status") == 403
        text = cb.sh(user, cfg, "status", sub["session_id"])
        assert re.search(rf"Host:\s+{node}\n", text.stdout), text.stdout
        # The container is on its node only.
        name = f"epcc-ces-jupyter-{sub['session_id']}"
        other = "node2" if node == "node1" else "node1"
        assert name in cb.containers(user, node)
        assert name not in cb.containers(user, other)
    # A session directory written on a node is read on login: the connection file too.
    listed = cb.sh(U1, cfg, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert any(s["session_id"] == sub1["session_id"] and s["host"] == "node1"
               for s in json.loads(listed.stdout)), listed.stdout


def test_the_connect_host_follows_the_site_template(cleanup):
    """node2 calls itself node2.shj.test; Slurm calls it node2; its fast network node2.ib.
    Every URL shown uses the template the site chose, and answers from login."""
    for template, want in (("{node}", "node2"), ("{node}.ib", "node2.ib")):
        cfg = cb.write_config(f'{cb.PORTS}connect_host = "{template}"\n')
        sub, card = cb.submit(U2, cfg, cleanup, "-w", "node2", "--time", "10")
        conn = cb.connection(U2, sub["session_id"], cfg)
        assert conn["host"] == want, conn
        assert card["url"].startswith(f"http://{want}:{conn['port']}/"), card
        assert card["connect_url"].startswith(f"http://{want}:"), card
        assert card["host"] == "node2", card
        assert _api_ok(conn), conn
        log = bed.session_log(sub["session_dir"])
        assert f"connect: http://{want}:{conn['port']}/" in log, log[-2000:]
        cancel = cb.sh(U2, cfg, "cancel", sub["session_id"])
        assert cancel.returncode == 0, cancel.stderr


def test_cancel_from_login_cleans_the_node_and_only_its_epilog_runs(cfg, cleanup):
    sub, _card = cb.submit(U1, cfg, cleanup, "-w", "node1", "--time", "10")
    job, sid = sub["job_id"], sub["session_id"]
    name = f"epcc-ces-jupyter-{sid}"
    uid = cb.uid(U1)
    scratch = f"/var/tmp/sh-jupyter/{U1}/scratch/{sid}"
    socket_path = f"/run/user/{uid}/sh-jupyter/{sid[:8]}.sock"
    assert cb.exists_on("node1", scratch) and not cb.exists_on("node2", scratch)
    assert cb.exists_on("node1", f"/run/user/{uid}")
    out = cb.sh(U1, cfg, "cancel", sid)
    assert out.returncode == 0, out.stderr
    bed.wait_for(lambda: cb.job_state(job) in ("CANCELLED", "COMPLETED"), 60,
                 f"job {job} to end", interval=0.2)

    def epilog_done() -> bool:
        return f"epilog job={job} user={U1} cleanup done" in cb.hooks_log("node1")
    bed.wait_for(epilog_done, 60, f"node1's epilog of job {job}", interval=0.2)
    assert name not in cb.containers(U1, "node1")
    assert not cb.exists_on("node1", scratch)
    assert not cb.exists_on("node1", socket_path)
    # The prolog and epilog ran on node1 only: node2 never heard of this job.
    assert f"job={job} " not in cb.hooks_log("node2")
    assert f"prolog job={job} " in cb.hooks_log("node1")
    assert cb.job_state(job) == "CANCELLED"
    card = cb.card(U1, sid, cfg)
    assert card["status"] == "Completed", card


def test_a_node_going_down_ends_only_its_sessions(cfg, cleanup):
    sub1, _ = cb.submit(U1, cfg, cleanup, "-w", "node1", "--time", "15")
    sub2, _ = cb.submit(U2, cfg, cleanup, "-w", "node2", "--time", "15")
    conn2 = cb.connection(U2, sub2["session_id"], cfg)
    try:
        crashed = cb.cluster("crash", "node1")
        assert crashed.returncode == 0, crashed.stderr
        assert not cb.running("node1")
        # Slurm notices (SlurmdTimeout) and ends the job with its node.
        bed.wait_for(lambda: cb.job_state(sub1["job_id"]) == "NODE_FAIL", 120,
                     "the job on node1 to end NODE_FAIL", interval=1)
        card1 = cb.card(U1, sub1["session_id"], cfg)
        assert card1["status"] == "Completed" and card1["failed"], card1
        assert "ended with its node" in card1["reason"], card1
        # node2's session never noticed.
        card2 = cb.card(U2, sub2["session_id"], cfg)
        assert card2["status"] == "Running" and card2["job_state"] == "RUNNING", card2
        assert _api_ok(conn2), conn2
    finally:
        back = cb.cluster("up")
        assert back.returncode == 0, back.stdout + back.stderr
    # node1 came back with a fresh /run: the next session there starts clean.
    uid = cb.uid(U1)
    assert not cb.exists_on("node1", f"/run/user/{uid}/sh-jupyter")
    sub3, card3 = cb.submit(U1, cfg, cleanup, "-w", "node1", "--time", "10")
    assert card3["status"] == "Running" and card3["host"] == "node1", card3
    assert _api_ok(cb.connection(U1, sub3["session_id"], cfg))
    # Back, node1 ran the crashed job's epilog (slurmctld asks the returning node to end
    # it): its container record and scratch, kept on node1's disk, are gone.
    crashed = sub1["job_id"]

    def crashed_cleaned() -> bool:
        return f"epilog job={crashed} user={U1} cleanup done" in cb.hooks_log("node1")
    bed.wait_for(crashed_cleaned, 120, f"node1's epilog of the crashed job {crashed}",
                 interval=0.5)
    assert f"epcc-ces-jupyter-{sub1['session_id']}" not in cb.containers(U1, "node1")
    assert not cb.exists_on("node1", f"/var/tmp/sh-jupyter/{U1}/scratch/{sub1['session_id']}")
    card2 = cb.card(U2, sub2["session_id"], cfg)
    assert card2["status"] == "Running", card2


def test_one_user_on_two_nodes_shares_no_podman_state(cfg, cleanup):
    sub1, _ = cb.submit(U1, cfg, cleanup, "-w", "node1", "--time", "10")
    sub2, _ = cb.submit(U1, cfg, cleanup, "-w", "node2", "--time", "10")
    n1, n2 = (f"epcc-ces-jupyter-{s['session_id']}" for s in (sub1, sub2))
    # Each node's Podman sees its own container only: storage, runtime files and database
    # are node-local, though the home directory is one.
    assert n1 in cb.containers(U1, "node1") and n2 not in cb.containers(U1, "node1")
    assert n2 in cb.containers(U1, "node2") and n1 not in cb.containers(U1, "node2")
    uid = cb.uid(U1)
    podman = ["podman", "--storage-opt", f"additionalimagestore={bed.STORE}", "--root",
              bed.graphroot(U1)]
    ids, pauses = {}, {}
    for node, name in (("node1", n1), ("node2", n2)):
        out = cb.on(node, [*podman, "inspect", "--format", "{{.Id}}", name], user=U1)
        assert out.returncode == 0, out.stderr
        ids[node] = out.stdout.strip()
        info = cb.on(node, [*podman, "info", "--format",
                            "{{.Store.GraphRoot}} {{.Store.RunRoot}}"], user=U1)
        assert info.returncode == 0, info.stderr
        graph, run = info.stdout.split()
        assert graph == bed.graphroot(U1) and run.startswith(f"/run/user/{uid}/"), info.stdout
        pause = cb.on(node, ["cat", f"/run/user/{uid}/libpod/tmp/pause.pid"])
        assert pause.returncode == 0, pause.stderr
        pauses[node] = pause.stdout.strip()
    # Runtime files: each container's run directory exists on its own node only.
    for node, other in (("node1", "node2"), ("node2", "node1")):
        run_dir = f"/run/user/{uid}/containers/overlay-containers/{ids[node]}"
        assert cb.exists_on(node, run_dir) and not cb.exists_on(other, run_dir)
    # Each node has its own pause process (its own user namespace), in its own PID space.
    for node, pid in pauses.items():
        comm = cb.on(node, ["cat", f"/proc/{pid}/comm"])
        assert comm.stdout.strip() == "catatonit", (node, pid, comm.stderr)
    # The two graphroots (same path) are different directories: each node's own /var/tmp.
    assert os.path.isdir(f"{cb.CLUSTER_DIR}/node1/var-tmp/sh-jupyter/{U1}/storage")
    assert os.path.isdir(f"{cb.CLUSTER_DIR}/node2/var-tmp/sh-jupyter/{U1}/storage")
    # Nothing of either session in the shared home's Podman storage.
    home_db = os.path.join(pwd.getpwnam(U1).pw_dir, ".local/share/containers/storage")
    for sid in (sub1["session_id"], sub2["session_id"]):
        hits = cb.on("login", ["grep", "-rlI", "--", sid, home_db], user=U1) \
            if os.path.isdir(home_db) else None
        assert hits is None or not hits.stdout.strip(), hits.stdout
    # doctor on each node says where this user's storage is.
    for node in cb.NODES:
        out = cb.sh(U1, cfg, "doctor", "--json", host=node)
        findings = {f["check"]: f for f in json.loads(out.stdout)["findings"]}
        storage = findings["storage"]
        assert storage["status"] == "ok", storage
        assert bed.graphroot(U1) in storage["message"], storage


# An SFTP server over TCP, as the user on login: sshfs on a node connects straight to it
# (directport), a network filesystem over the cluster's network with no ssh daemon anywhere.
SFTP_SERVER = r"""
import socket, subprocess, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.listen(4)
print(s.getsockname()[1], flush=True)
while True:
    conn, _ = s.accept()
    subprocess.Popen(["/usr/lib/openssh/sftp-server", "-d", sys.argv[2]], stdin=conn.fileno(),
                     stdout=conn.fileno())
    conn.close()
"""


def test_doctor_refuses_container_storage_on_a_network_filesystem(hosts):
    export = os.path.join(pwd.getpwnam(U1).pw_dir, "shj-netfs-export")
    made = bed.as_user(U1, ["mkdir", "-p", export])
    assert made.returncode == 0, made.stderr
    server = cb.popen_on("login", ["/usr/bin/python3", "-c", SFTP_SERVER, cb.ADDRESS["login"],
                                   export], user=U1, stdout=subprocess.PIPE, text=True)
    mnt = "/var/tmp/shj-netfs"
    try:
        port = server.stdout.readline().strip()
        assert port.isdigit(), port
        assert cb.on("node1", ["mkdir", "-p", mnt]).returncode == 0
        mounted = cb.on("node1", ["sshfs", "-o", f"directport={port},allow_other",
                                  f"login:{export}", mnt])
        assert mounted.returncode == 0, mounted.stderr
        # A file written on node1 lands on login's side, as the user (the server runs as them).
        wrote = cb.on("node1", ["sh", "-c", f"echo from-node1 > {mnt}/probe"], user=U1)
        assert wrote.returncode == 0, wrote.stderr
        with open(os.path.join(export, "probe"), encoding="utf-8") as fh:
            assert fh.read() == "from-node1\n"
        cfg = cb.write_config(f'{cb.PORTS}[podman]\ngraphroot = "{mnt}/{{user}}/storage"\n')
        out = cb.sh(U1, cfg, "doctor", "--json", host="node1")
        findings = {f["check"]: f for f in json.loads(out.stdout)["findings"]}
        storage = findings["storage"]
        assert storage["status"] == "error", storage
        assert f"{mnt}/{U1}/storage" in storage["message"] and "fuse.sshfs" in storage["message"]
        assert out.returncode == 2
        # The same user on node2 (no such mount there) is fine with the same config.
        out2 = cb.sh(U1, cfg, "doctor", "--json", host="node2")
        storage2 = {f["check"]: f for f in json.loads(out2.stdout)["findings"]}["storage"]
        assert storage2["status"] == "ok", storage2
        # Podman's own default, in the shared home: a warning, naming why.
        home_cfg = cb.write_config(f'{cb.PORTS}[podman]\ngraphroot = ""\n')
        out3 = cb.sh(U1, home_cfg, "doctor", "--json", host="node2")
        storage3 = {f["check"]: f for f in json.loads(out3.stdout)["findings"]}["storage"]
        assert storage3["status"] == "warn" and "home directory" in storage3["message"], storage3
    finally:
        cb.on("node1", ["fusermount3", "-u", mnt])
        cb.stop(server)
        bed.as_user(U1, ["rm", "-rf", export])


def test_doctor_on_a_node_the_user_never_ran_on_leaves_podman_alone(cfg):
    """Before any job of the user reached a node there is no /run/user/UID; Podman run as the
    user then would take /tmp for its run root and keep it in the storage for good."""
    uid = cb.uid(U2)
    running_there = cb.squeue("-u", U2, "-w", "node1", "-t", "R,CG", "-o", "%i")
    assert not running_there, f"{U2} has jobs on node1: {running_there}"
    pause = cb.on("node1", ["cat", f"/run/user/{uid}/libpod/tmp/pause.pid"]).stdout.strip()
    if pause.isdigit():  # a node fresh from boot: no pause process, no runtime directory
        cb.on("node1", ["kill", pause])
    cb.on("node1", ["rm", "-rf", f"/run/user/{uid}", f"/tmp/containers-user-{uid}",
                    f"/tmp/podman-run-{uid}"])
    out = cb.sh(U2, cfg, "doctor", "--json", host="node1")
    findings = {f["check"]: f for f in json.loads(out.stdout)["findings"]}
    assert findings["runtime-dir"]["status"] == "error", findings["runtime-dir"]
    assert findings["image"]["status"] == "warn", findings["image"]
    assert "not checked" in findings["image"]["message"], findings["image"]
    assert "/var/tmp/sh-jupyter/shjuser2/storage" in findings["storage"]["message"]
    # The first job there (its prolog makes /run/user/UID) gets its run root under it.
    cb.ensure_runtime_dir(U2, "node1")
    info = cb.on("node1", ["podman", "--root", bed.graphroot(U2), "info", "--format",
                           "{{.Store.RunRoot}}"], user=U2)
    assert info.stdout.strip() == f"/run/user/{uid}/containers", info.stdout + info.stderr
