"""Project notebooks through a real JupyterHub: log-in at the portal (OAuth), a server for a
project in the job sandbox, a kernel that runs ``nora`` there, refusal without a role, stop."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psutil
import pytest
from sqlalchemy import select

from nifti_archive.models import ApiToken, JobState
from nifti_archive.notebooks.servers import HUB_API_TOKEN, workdir
from tests.notebook_client import (
    Stack,
    assert_sees_its_project_only,
    ended_run,
    hub_log_in,
    notebook_stack,
    portal_log_in,
    run_in_kernel,
    server_ready,
)
from tests.polling import wait_until
from tests.portal_site import PASSWORD, SiteTemplate, copy_site


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, portal_site: SiteTemplate) -> Iterator[Stack]:
    site = copy_site(portal_site, tmp_path_factory.mktemp("notebooks") / "var", secure_cookies=False)
    try:
        with notebook_stack(site) as running:
            yield running
    finally:
        site.archive.close()


def test_a_notebook_sees_its_project_as_a_job_does(stack: Stack) -> None:
    site, hub = stack.site, stack.hub
    browser = hub_log_in(stack, "editor")
    answer = hub.api("POST", "users/editor/servers/alpha", {"project": "alpha", "executor": "local"})
    assert answer.status_code in (201, 202), answer.text
    wait_until(lambda: server_ready(hub, "editor", "alpha"), 120, "the notebook server to be ready")
    assert_sees_its_project_only(stack, browser, "editor", "alpha")
    # The time asked for (the default, 120 minutes) ends the server as it ends a job.
    limited = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [""])[0] == "/usr/bin/timeout"]
    assert [c[1] for c in limited if c[2].endswith("jupyterhub-singleuser")] == ["120m"]
    with site.archive.sessions() as session:
        token = session.scalars(select(ApiToken).where(ApiToken.name == "notebook alpha")).one()
        assert token.project_id is not None and token.expires_at is not None and token.revoked_at is None
    assert hub.api("DELETE", "users/editor/servers/alpha").status_code in (202, 204)
    wait_until(lambda: "alpha" not in hub.api("GET", "users/editor").json()["servers"], 60, "the server to stop")
    assert not [p.info for p in psutil.process_iter(["cmdline"]) if "jupyterhub-singleuser" in " ".join(p.info["cmdline"] or [])]
    with site.archive.sessions() as session:
        assert session.scalars(select(ApiToken).where(ApiToken.name == "notebook alpha")).one().revoked_at is not None


def test_a_user_without_a_role_on_the_project_is_refused(stack: Stack) -> None:
    hub = stack.hub
    hub_log_in(stack, "norole")
    answer = hub.api("POST", "users/norole/servers/alpha", {"project": "alpha"})
    assert answer.status_code == 403, answer.text
    assert "no role" in answer.json()["message"]
    bad = hub.api("POST", "users/norole/servers/x", {"project": "alpha", "partition": "a; rm -rf /"})
    assert bad.status_code == 400, bad.text


def test_the_hub_never_holds_a_password(stack: Stack) -> None:
    assert PASSWORD not in stack.hub.log.read_text()


def test_the_portal_starts_lists_and_stops_a_members_notebook(stack: Stack) -> None:
    portal, hub = stack.portal, stack.hub
    url = portal.url + "/api/v1/projects/alpha/notebooks"
    stranger, _csrf = portal_log_in(stack, "norole")
    assert stranger.post(url, json={"executor": "local"}, timeout=30).status_code == 404
    browser, _csrf = portal_log_in(stack, "viewer")
    refused = browser.post(url, json={"executor": "local", "cpus": 0}, timeout=30)
    assert refused.status_code == 400 and "cpus" in refused.json()["error"]
    started = browser.post(url, json={"executor": "local", "time_minutes": 30}, timeout=60)
    assert started.status_code == 202, started.text
    assert started.json()["url"] == hub.url + "user/viewer/alpha/lab"

    def listed_ready() -> bool:
        return [n["ready"] for n in browser.get(url, timeout=30).json()["notebooks"]] == [True]

    wait_until(listed_ready, 120, "the portal to list the notebook as running")
    again = browser.post(url, json={"executor": "local"}, timeout=60)
    assert again.status_code == 409, again.text
    token = stack.site.archive.settings.read_secret(HUB_API_TOKEN)
    for page in ("/p/alpha/notebooks", "/p/alpha/gridstats"):
        shown = browser.get(portal.url + page, timeout=30)
        assert shown.status_code == 200 and 'id="notebooks"' in shown.text and token not in shown.text
    assert browser.delete(url, timeout=60).status_code == 204
    wait_until(lambda: browser.get(url, timeout=30).json()["notebooks"] == [], 60, "the notebook to be gone")
    assert "alpha" not in hub.api("GET", "users/viewer").json()["servers"]


def test_an_errored_run_is_debugged_in_a_notebook_with_its_arguments(stack: Stack) -> None:
    portal, site = stack.portal, stack.site
    run_id, done_id = ended_run(site, JobState.ERROR), ended_run(site, JobState.DONE)
    browser, _csrf = portal_log_in(stack, "editor")
    viewer, _csrf = portal_log_in(stack, "viewer")
    assert viewer.post(f"{portal.url}/api/v1/projects/alpha/runs/{run_id}/notebook", json={}, timeout=30).status_code == 403
    done = browser.post(f"{portal.url}/api/v1/projects/alpha/runs/{done_id}/notebook", json={}, timeout=60)
    assert done.status_code == 404 and "did not fail" in done.json()["error"], done.text
    with site.archive.sessions() as session:  # the token issued before the refusal is given back
        assert all(t.revoked_at for t in session.scalars(select(ApiToken).where(ApiToken.name == "notebook alpha")))
    started = browser.post(f"{portal.url}/api/v1/projects/alpha/runs/{run_id}/notebook", json={}, timeout=60)
    assert started.status_code == 202, started.text
    assert started.json()["url"].endswith(f"/user/editor/alpha/lab/tree/debug-run-{run_id}.ipynb")
    wait_until(lambda: server_ready(stack.hub, "editor", "alpha"), 120, "the debugging notebook to be ready")
    folder = workdir(site.archive.settings, "editor", "alpha")
    cells = json.loads((folder / f"debug-run-{run_id}.ipynb").read_text())["cells"]
    # Its cells, run as the job ran: the file it read, the output it was to write.
    hub_browser = hub_log_in(stack, "editor")
    printed = run_in_kernel(hub_browser, stack.hub.url + "user/editor/alpha/", "\n".join(
        [cells[2]["source"], cells[3]["source"], "print(os.environ['f1'])", "print(os.path.getsize(os.environ['o1']))"]))
    source = site.archive.settings.archive_root / "alpha" / "P01" / "S1" / "001_ax" / "ax_asc_35sl_6.nii"
    assert printed.splitlines()[-2:] == [str(source), str(source.stat().st_size)], printed
    assert (folder / f"run-{run_id}-outputs").is_dir()
    assert browser.delete(portal.url + "/api/v1/projects/alpha/notebooks", timeout=60).status_code == 204
