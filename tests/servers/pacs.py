"""Two PACS peers for the query/retrieve tests: a plain Orthanc and dcmtk's dcmqrscp, on free ports."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from orthanc_plugin.deployment import DICOM_TCP_ENVIRONMENT, OrthancProcess, start_orthanc

from .northanc import northanc_settings
from .ports import free_port


@dataclass(frozen=True)
class Destination:
    """Where a peer sends what it is asked to move: Northanc's AET, host and DICOM port."""

    aet: str
    port: int
    host: str = "127.0.0.1"


def start_orthanc_pacs(var: Path, aet: str, destination: Destination, files: Iterable[Path]) -> OrthancProcess:
    """A plain Orthanc (no plugin) as a PACS that knows Northanc, loaded with ``files`` over REST."""
    settings = dataclasses.replace(northanc_settings(var), orthanc_aet=aet, orthanc_password="pacs-peer")
    modalities = {"northanc": [destination.aet, destination.host, destination.port]}
    orthanc = start_orthanc(settings, with_plugin=False, extra={"DicomModalities": modalities, "Name": aet})
    orthanc.wait_ready()
    api = orthanc.api()
    for path in files:
        if path.suffix.lower() not in (".txt", ".nii", ".json"):
            api.store(path.read_bytes())
    return orthanc


@dataclass
class Dcmqrscp:
    aet: str
    port: int
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def start_dcmqrscp(var: Path, aet: str, destinations: dict[str, Destination], folder: Path) -> Dcmqrscp:
    """dcmtk's query/retrieve SCP with its own index, filled from ``folder`` with dcmsend.

    ``destinations`` are the AETs it may move to (its HostTable); an AET not there is refused.
    """
    database = var / "db"
    database.mkdir(parents=True)
    port = free_port()
    hosts = "\n".join(f"{name} = ({d.aet}, {d.host}, {d.port})" for name, d in destinations.items())
    (var / "dcmqrscp.cfg").write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 131072\nMaxAssociations = 16\n"
        f"HostTable BEGIN\n{hosts}\nHostTable END\n"
        "VendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\n{aet} {database} RW (1000, 2048mb) ANY\nAETable END\n"
    )
    env = {**DICOM_TCP_ENVIRONMENT, "PATH": "/usr/bin:/bin"}
    log = (var / "dcmqrscp.log").open("ab")
    process = subprocess.Popen(["dcmqrscp", "-c", str(var / "dcmqrscp.cfg")], stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while True:
        sent = subprocess.run(["dcmsend", "-aec", aet, "-nh", "+sd", "+r", "127.0.0.1", str(port), str(folder)],
                              capture_output=True, text=True, env=env)
        if sent.returncode == 0:
            return Dcmqrscp(aet, port, process)
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"dcmqrscp did not take the data: {sent.stderr[-500:]}")
        time.sleep(0.2)
