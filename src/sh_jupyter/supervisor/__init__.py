"""The supervisor: runs as the user inside the Slurm job and owns the container's whole life.

`entry` (`sh-jupyter run`, `api.run`: who, where, which session) hands over to `lifecycle`
(the session from start to teardown, over the phases `start`, `watch` and `teardown`, which
share `phase`), which uses `podman_service` (a private Podman API
service, started and stopped per session), `container` (create, start, readiness, end through
podman-py), `follow` (conmon's pidfd and the signal pipe while the session runs), `readiness`
(HTTP checks), `ports` (a free port) and `cgroups` (the job's memory cgroup). While the
session runs, the CLI's supervisor hands its process (`handoff`) to the small `idle` wait,
which hands it back to `resume` when the session needs the supervisor again. Nothing is
imported here, so `entry` stays light on the path to Connect.
"""
