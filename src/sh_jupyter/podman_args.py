"""Podman global options shared by every context that runs podman for a user (supervisor,
prolog/epilog, doctor). Kept free of heavy imports: the prolog runs for every job."""

from __future__ import annotations


def global_args(graphroot: str, runroot: str, image_store: str) -> list[str]:
    """podman global options: storage on node-local disk when the site asks, and the shared
    image store. Rootless Podman ignores `additionalimagestores` in /etc/containers/storage.conf
    (containers/storage#1591), so the store is passed explicitly on every invocation."""
    args = ["--storage-opt", f"additionalimagestore={image_store}"] if image_store else []
    if graphroot:
        args += ["--root", graphroot]
    if runroot:
        args += ["--runroot", runroot]
    return args
