"""Two PACS peers for the query/retrieve tests: a plain Orthanc and dcmtk's dcmqrscp, on free ports."""

from __future__ import annotations

import dataclasses
import io
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pydicom.errors
from pydicom.uid import generate_uid

from nifti_archive.waiting import wait_until
from orthanc_plugin.deployment import DICOM_TCP_ENVIRONMENT, OrthancProcess, start_orthanc
from testbed.children import stop_child
from testbed.northanc import northanc_settings
from testbed.ports import free_port


@dataclass(frozen=True)
class Destination:
    """Where a peer sends what it is asked to move: Northanc's AET, host and DICOM port."""

    aet: str
    port: int
    host: str = "127.0.0.1"


def with_accession_number(path: Path, accession_numbers: Mapping[str, str]) -> bytes | None:
    """The file's bytes, its AccessionNumber set where its study is named; None for non-DICOM."""
    try:
        dataset = pydicom.dcmread(path)
    except pydicom.errors.InvalidDicomError:
        return None
    wanted = accession_numbers.get(str(dataset.StudyInstanceUID))
    if wanted is None:
        return path.read_bytes()
    dataset.AccessionNumber = wanted
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def renamed_study(files: Iterable[Path], tag: str, patient_id: str | None = None) -> list[bytes]:
    """A copy of one study with new UIDs, its AccessionNumber ``tag`` and PatientID ``patient_id`` (or ``tag``)."""
    out = []
    for path in files:
        try:
            dataset = pydicom.dcmread(path)
        except pydicom.errors.InvalidDicomError:
            continue
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            setattr(dataset, keyword, generate_uid(entropy_srcs=[tag, str(getattr(dataset, keyword))]))
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.AccessionNumber = tag
        dataset.PatientID = patient_id or tag
        buffer = io.BytesIO()
        dataset.save_as(buffer, enforce_file_format=True)
        out.append(buffer.getvalue())
    return out


def start_orthanc_pacs(var: Path, aet: str, destinations: Mapping[str, Destination], files: Iterable[Path] = (),
                       accession_numbers: Mapping[str, str] | None = None) -> OrthancProcess:
    """A plain Orthanc (no plugin) as a PACS that may move to ``destinations``, loaded with ``files``
    over REST; ``accession_numbers`` (StudyInstanceUID -> number) gives studies the numbers the data lacks."""
    settings = dataclasses.replace(northanc_settings(var), orthanc_aet=aet, orthanc_password="pacs-peer")
    modalities = {name: [d.aet, d.host, d.port] for name, d in destinations.items()}
    orthanc = start_orthanc(settings, with_plugin=False, extra={"DicomModalities": modalities, "Name": aet})
    orthanc.wait_ready()
    api = orthanc.api()
    for path in files:
        data = with_accession_number(path, accession_numbers or {})
        if data is not None:
            api.store(data)
    return orthanc


@dataclass
class Dcmqrscp:
    aet: str
    port: int
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        stop_child(self.process)


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

    def loaded() -> bool:
        # dcmsend fails while dcmqrscp is not yet listening; a dcmqrscp that exited never will.
        if process.poll() is not None:
            raise RuntimeError(f"dcmqrscp exited with {process.returncode}; see {var / 'dcmqrscp.log'}")
        sent = subprocess.run(["dcmsend", "-aec", aet, "-nh", "+sd", "+r", "127.0.0.1", str(port), str(folder)],
                              capture_output=True, text=True, env=env, check=False)
        return sent.returncode == 0

    try:
        wait_until(loaded, 30, "dcmqrscp to take the data", interval=0.2)
    except (AssertionError, RuntimeError):
        process.kill()
        raise
    return Dcmqrscp(aet, port, process)
