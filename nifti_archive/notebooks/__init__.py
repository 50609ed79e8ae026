"""Notebooks: JupyterLab for a project, started through JupyterHub, which signs users in with the
portal as its OAuth2 provider and runs each server in the job sandbox as the jobs account."""
