"""``nora -p P --bids OUT [--filter EXPR] [--link]``: a project as a BIDS dataset, its images copies
(``--link``: read-only hard links to the archive's files, not to be edited in place)."""

from __future__ import annotations

from pathlib import Path
from typing import IO

from nifti_archive.archive import Archive
from nifti_archive.bids.export import export_project
from nifti_archive.cli.commands import Command, project_name
from nifti_archive.cli.parser import Request


def do_bids(archive: Archive, request: Request, out: IO[str]) -> None:
    target = Path(request.args.bids)
    exported = export_project(archive, project_name(request), target, request.args.filter or "", request.args.link)
    written, plan = exported.written, exported.plan
    out.writelines(line + "\n" for line in plan.report_lines())
    if written.link_refused:
        out.write(f"{written.copied} file(s) copied: hard links were refused ({written.link_refused})\n")
    if request.args.link:
        out.write("images are read-only hard links to the archive's files: do not edit them in place\n")
    if written.replaced:
        out.write(f"{len(written.replaced)} file(s) replaced: changed in the archive since the last export\n")
    out.write(f"BIDS dataset {target.absolute()}: {len(plan.images)} image(s), {len(plan.unmapped)} series not mapped; "
              f"{len(written.added)} file(s) written, {written.kept} already there\n")


BIDS_COMMANDS: dict[str, Command] = {"bids": do_bids}
