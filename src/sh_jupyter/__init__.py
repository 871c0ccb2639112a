"""sh-jupyter: JupyterLab in a rootless Podman container whose life is tied to a Slurm job."""

__version__ = "0.1.0"
