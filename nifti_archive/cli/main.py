"""Entry point of ``nora``: parse, run one action, map errors to exit codes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from logging.handlers import RotatingFileHandler

from sqlalchemy.exc import SQLAlchemyError

from nifti_archive.archive import Archive
from nifti_archive.cli import remote
from nifti_archive.cli.admin import run_admin
from nifti_archive.cli.commands import COMMANDS
from nifti_archive.cli.conversion_commands import CONVERSION_COMMANDS
from nifti_archive.cli.extensions import load as load_extensions
from nifti_archive.cli.parser import build_parser, resolve
from nifti_archive.errors import ArchiveError
from nifti_archive.settings import Settings, load_settings

log = logging.getLogger("nora")

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2


class _OneLineFormatter(logging.Formatter):
    """The terminal gets one line per message; tracebacks go to the log file only."""

    def format(self, record: logging.LogRecord) -> str:
        return f"nora: {record.levelname.lower()}: {record.getMessage()}"


def _configure_logging(settings: Settings) -> str | None:
    """Warnings to stderr; everything at the configured level to the log file, if it can be written."""
    root = logging.getLogger()
    root.setLevel(settings.log_level)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(_OneLineFormatter())
    root.addHandler(console)
    log_file = settings.log_dir / "nora.log"
    try:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(log_file, maxBytes=5_000_000, backupCount=3)
    except OSError:
        return None
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    return str(log_file)


def _fail(message: str) -> int:
    sys.stderr.write(f"nora: error: {message}\n")
    return EXIT_USAGE


def run(argv: Sequence[str]) -> int:
    argv = list(argv)
    if remote.active():
        return _run_remote(argv)
    admin_argv = argv[argv.index("--admin") + 1 :] if "--admin" in argv else None
    extensions = load_extensions() if admin_argv is None else []
    try:
        if admin_argv is None:
            args = build_parser(extensions).parse_args(argv)
        settings = load_settings()
    except ArchiveError as exc:
        return _fail(str(exc))
    log_file = _configure_logging(settings)
    archive = Archive(settings)
    try:
        if admin_argv is not None:
            run_admin(archive, admin_argv, sys.stdout)
        else:
            request = resolve(args, extensions)
            archive.check_schema()
            commands = {**COMMANDS, **CONVERSION_COMMANDS}
            for extension in extensions:
                commands.update(extension.COMMANDS)
            commands[request.action](archive, request, sys.stdout)
    except ArchiveError as exc:
        return _fail(str(exc))
    except SQLAlchemyError as exc:
        log.debug("database error", exc_info=True)
        return _fail(f"the archive database refused the request: {getattr(exc, 'orig', exc)}")
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # the one place that turns a bug into a line instead of a traceback
        log.exception("internal error")
        where = f" (details in {log_file})" if log_file else ""
        sys.stderr.write(f"nora: internal error: {type(exc).__name__}: {exc}{where}\n")
        return EXIT_INTERNAL
    finally:
        archive.close()
    return EXIT_OK


def _run_remote(argv: list[str]) -> int:
    """Inside a batch job: the portal's API instead of the database (see remote.py)."""
    try:
        remote.run(argv, sys.stdout)
    except ArchiveError as exc:
        return _fail(str(exc))
    except BrokenPipeError:
        pass
    return EXIT_OK


def main() -> None:
    sys.exit(run(sys.argv[1:]))
