"""A whole Northanc for a test: archive index, Orthanc with the plugin on free ports, and
helpers to send DICOM with dcmtk's storescu and to wait for the conversions."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from sqlalchemy import func, select

from nifti_archive.archive import Archive
from nifti_archive.ingest import conversion_queue
from nifti_archive.installation import initialise
from nifti_archive.models import ConversionRequest
from nifti_archive.orthanc_api import OrthancRest
from nifti_archive.processes import child_environment
from nifti_archive.settings import Settings
from nifti_archive.waiting import wait_until
from orthanc_plugin.deployment import DICOM_TCP_ENVIRONMENT, OrthancProcess, start_orthanc
from testbed import TEST_PASSWORD_COST
from testbed.ports import free_port

# The installed command line, beside this Python.
NORA = Path(sys.executable).with_name("nora")
# storescu proposes only uncompressed transfer syntaxes unless told: these need their own
# association, with the compressed syntax proposed.
PROPOSAL_FLAGS = {
    "1.2.840.10008.1.2.4.70": "-xs",  # JPEG lossless
    "1.2.840.10008.1.2.4.57": "-xs",
    "1.2.840.10008.1.2.4.90": "-xv",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "-xw",
}


def northanc_settings(var: Path, database_url: str | None = None, orthanc_database_url: str = "") -> Settings:
    """A Northanc's settings on free ports; its archive index in SQLite under ``var`` unless
    ``database_url`` says otherwise, Orthanc's index in PostgreSQL where ``orthanc_database_url`` says."""
    http_port = free_port()
    return Settings(
        var_dir=var,
        database_url=database_url or f"sqlite:///{var / 'archive.sqlite'}",
        orthanc_database_url=orthanc_database_url,
        archive_root=var / "archive",
        log_dir=var / "log",
        orthanc_url=f"http://127.0.0.1:{http_port}",
        orthanc_http_port=http_port,
        orthanc_dicom_port=free_port(),
        stable_age=1,
        conversion_workers=2,
        password_cost=TEST_PASSWORD_COST,
    )


@dataclass
class Northanc:
    settings: Settings
    archive: Archive
    orthanc: OrthancProcess

    @classmethod
    def start(cls, settings: Settings) -> Northanc:
        archive = Archive(settings)
        initialise(archive)
        northanc = cls(settings, archive, start_orthanc(settings))
        northanc.orthanc.wait_ready()
        return northanc

    def restart(self) -> None:
        self.orthanc = start_orthanc(self.settings)
        self.orthanc.wait_ready()

    def stop(self) -> None:
        self.orthanc.stop()
        self.archive.close()

    @property
    def rest(self) -> OrthancRest:
        return self.orthanc.api()

    def env(self) -> dict[str, str]:
        """The environment in which `nora` talks to this Northanc."""
        return child_environment(self.settings)

    def nora(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """The installed `nora` command against this Northanc (``env``: settings to add or change)."""
        return subprocess.run([str(NORA), *args], env={**self.env(), **env}, capture_output=True, text=True, timeout=600,
                              check=False)

    def storescu(
        self, files: Iterable[Path] | dict[str, list[str]], called_aet: str = "NORTHANC", only_required: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return storescu(files, self.settings.orthanc_dicom_port, called_aet, only_required=only_required)

    def wait_for_conversions(self, series: int, timeout: float = 180.0) -> dict[str, int]:
        """Poll until at least ``series`` requests have finished and none is queued or running."""

        def finished() -> dict[str, int] | None:
            with self.archive.sessions() as session:
                finished = ConversionRequest.state.in_(conversion_queue.FINISHED)
                done = session.scalar(select(func.count()).select_from(ConversionRequest).where(finished)) or 0
                if done >= series and conversion_queue.is_idle(session):
                    return dict(conversion_queue.counts(session))
            return None

        return wait_until(finished, timeout, f"{series} conversions to finish", interval=0.25)


def _proposal_flag(path: Path) -> str:
    try:
        syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    except (pydicom.errors.InvalidDicomError, OSError, AttributeError):  # not DICOM: storescu reports it and goes on
        return ""
    return PROPOSAL_FLAGS.get(syntax, "")


def by_transfer_syntax(files: Iterable[Path]) -> dict[str, list[str]]:
    """Files grouped by the storescu flag that proposes their transfer syntax."""
    groups: dict[str, list[str]] = {}
    for path in files:
        groups.setdefault(_proposal_flag(path), []).append(str(path))
    return groups


def storescu(
    files: Iterable[Path] | dict[str, list[str]], port: int, called_aet: str = "NORTHANC", tcp_settings: bool = True,
    only_required: bool = False,
) -> subprocess.CompletedProcess[str]:
    """C-STORE files with dcmtk's storescu, one association per transfer syntax; non-DICOM
    files are offered too (storescu reports and skips them). Give ``by_transfer_syntax``'s
    grouping instead of files to keep reading headers out of a timed section. storescu's
    default proposal leaves out newer SOP classes (DICOM SEG among them): ``only_required``
    proposes exactly the files' own."""
    groups = files if isinstance(files, dict) else by_transfer_syntax(files)
    env = {**os.environ, **(DICOM_TCP_ENVIRONMENT if tcp_settings else {})}
    if not tcp_settings:
        for name in DICOM_TCP_ENVIRONMENT:
            env.pop(name, None)
    output, returncode = [], 0
    for flag, paths in groups.items():
        command = ["storescu", "-aet", "TESTSCU", "-aec", called_aet, "-nh", *([flag] if flag else []), *(["-R"] if only_required else []),
                   "127.0.0.1", str(port), *paths]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, check=False)
        output.append(result.stdout + result.stderr)
        returncode = returncode or result.returncode
    return subprocess.CompletedProcess(["storescu"], returncode, "".join(output), "")
