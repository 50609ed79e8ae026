"""A single-node Slurm from Debian's packages: munged, slurmctld and slurmd with a generated
slurm.conf (two partitions) under a temp dir, on free ports; stopped afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from nifti_archive.waiting import wait_until
from testbed.ports import free_port

PARTITIONS = ("DPXproc", "DPXimport")


def _munge_running() -> bool:
    return subprocess.run(["munge", "-n"], capture_output=True, check=False).returncode == 0


def ensure_munged() -> subprocess.Popen[bytes] | None:
    """munged for the whole machine; started here only when none answers."""
    if _munge_running():
        return None
    Path("/run/munge").mkdir(exist_ok=True)
    Path("/run/munge").chmod(0o755)  # munged insists; the test process's umask (027) would deny others
    shutil.chown("/run/munge", "munge", "munge")
    process = subprocess.Popen(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--foreground"])
    wait_until(_munge_running, 20, "munged did not start")
    return process


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    munged: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.munged is not None:
            self.munged.terminate()
            self.munged.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_slurm(cpus: int = 2) -> SlurmCluster:
    munged = ensure_munged()
    root = Path(tempfile.mkdtemp(prefix="northanc-slurm-"))
    host = socket.gethostname().split(".")[0]
    for folder in ("state", "spool", "log"):
        (root / folder).mkdir()
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=northanc",
                f"SlurmctldHost={host}",
                f"SlurmctldPort={free_port()}",
                f"SlurmdPort={free_port()}",
                "AuthType=auth/munge",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "ReturnToService=2",
                "SlurmUser=root",
                "JobCompType=jobcomp/none",
                "AccountingStorageType=accounting_storage/none",
                "MaxArraySize=10001",
                "MaxJobCount=20000",
                f"StateSaveLocation={root / 'state'}",
                f"SlurmdSpoolDir={root / 'spool'}",
                f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'slurmd.pid'}",
                f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
                f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
                f"NodeName={host} CPUs={cpus} RealMemory=4000 State=UNKNOWN",
                *(f"PartitionName={p} Nodes={host} Default={'YES' if i == 0 else 'NO'} MaxTime=INFINITE State=UP"
                  for i, p in enumerate(PARTITIONS)),
                "",
            ]
        )
    )
    cluster = SlurmCluster(root, conf, munged=munged)
    env = cluster.env
    cluster.processes.append(subprocess.Popen(["slurmctld", "-D", "-f", str(conf)], env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    cluster.processes.append(subprocess.Popen(["slurmd", "-D", "-f", str(conf)], env=env,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    def idle() -> bool:
        result = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, check=False)
        return result.returncode == 0 and "idle" in result.stdout

    try:
        wait_until(idle, 60, "Slurm's node to come up idle", interval=0.2)
    except AssertionError:
        cluster.stop()
        raise
    return cluster
