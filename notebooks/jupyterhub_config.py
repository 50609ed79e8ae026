"""JupyterHub's configuration file: Northanc's settings decide everything (jobs/notebook_hub.py)."""

from jobs.notebook_hub import configure

configure(c)  # type: ignore[name-defined]  # noqa: F821  # JupyterHub's configuration object
