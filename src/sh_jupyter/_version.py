"""The one place sh-jupyter's version is written (pyproject.toml and the RPM read it here)."""

__version__ = "0.2.0"
