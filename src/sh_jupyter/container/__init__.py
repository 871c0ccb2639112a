"""The container a session runs in, as data and host facts (no Podman calls of its own).

`spec` builds the create spec, `oci_runtime` chooses crun or runc, `podman_args` holds the
Podman global options every context uses, `gpus` the container's own view of its GPUs,
`exits` turns how a container ended into the card's reason, `cgroups` reads the job's cgroups.
"""
