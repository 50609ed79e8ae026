"""Project notebooks as Slurm jobs (batchspawner's SlurmSpawner on the single-node Slurm):
the server runs in the job sandbox on the node; Slurm's refusal is the answer; stopping the
server ends the Slurm job."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from testbed.slurm import SlurmCluster, start_slurm
from tests.notebook_client import Stack, assert_sees_its_project_only, hub_log_in, notebook_stack, server_ready
from tests.polling import wait_until
from tests.portal_site import SiteTemplate, copy_site

SLURM = {"project": "alpha", "executor": "slurm", "partition": "DPXproc", "cpus": 1, "memory_mb": 500, "time_minutes": 10}


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    running = start_slurm()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, portal_site: SiteTemplate, cluster: SlurmCluster) -> Iterator[Stack]:
    site = copy_site(portal_site, tmp_path_factory.mktemp("notebooks-slurm") / "var", secure_cookies=False)
    try:
        with notebook_stack(site, {"SLURM_CONF": str(cluster.conf)}) as running:
            yield running
    finally:
        site.archive.close()


def queued(cluster: SlurmCluster) -> list[str]:
    listed = subprocess.run(["squeue", "-h", "-o", "%i %j"], env=cluster.env, capture_output=True, text=True, check=True)
    return [line.split()[0] for line in listed.stdout.splitlines() if line.endswith("northanc-notebook")]


def test_a_notebook_on_slurm_sees_its_project_and_stopping_ends_the_job(stack: Stack, cluster: SlurmCluster) -> None:
    hub = stack.hub
    browser = hub_log_in(stack, "editor")
    answer = hub.api("POST", "users/editor/servers/alpha", SLURM)
    assert answer.status_code in (201, 202), answer.text
    wait_until(lambda: server_ready(hub, "editor", "alpha"), 120, "the notebook's Slurm job to serve")
    [job] = queued(cluster)
    assert_sees_its_project_only(stack, browser, "editor", "alpha")
    assert hub.api("DELETE", "users/editor/servers/alpha").status_code in (202, 204)
    wait_until(lambda: "alpha" not in hub.api("GET", "users/editor").json()["servers"], 60, "the server to stop")
    wait_until(lambda: job not in queued(cluster), 30, "Slurm to end the notebook's job")


def test_a_request_beyond_the_partition_shows_slurms_reason(stack: Stack, cluster: SlurmCluster) -> None:
    hub = stack.hub
    hub_log_in(stack, "viewer")
    # The node has 4000 MB: sbatch refuses at once, in its own words.
    answer = hub.api("POST", "users/viewer/servers/alpha", {**SLURM, "memory_mb": 64000})
    assert answer.status_code == 400, answer.text
    message = answer.json()["message"]
    assert message.startswith("Slurm refused the notebook job:") and "Memory specification can not be satisfied" in message, message
    unknown = hub.api("POST", "users/viewer/servers/alpha", {**SLURM, "partition": "nope"})
    assert unknown.status_code == 400 and "Invalid partition name specified" in unknown.json()["message"], unknown.text
    # More CPUs than the node has: Slurm takes the job but leaves it pending for good.
    beyond = hub.api("POST", "users/viewer/servers/alpha", {**SLURM, "cpus": 64})
    assert beyond.status_code == 400 and beyond.json()["message"].endswith("pending for PartitionConfig"), beyond.text
    wait_until(lambda: not queued(cluster), 30, "the hopeless job to be cancelled")
