"""Entry point of ``nora``: parse, run one action, map errors to exit codes."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from logging.handlers import RotatingFileHandler
from typing import IO

from sqlalchemy.exc import SQLAlchemyError

from nifti_archive.archive import Archive
from nifti_archive.cli import remote
from nifti_archive.cli.admin import run_admin
from nifti_archive.cli.bids_commands import BIDS_COMMANDS
from nifti_archive.cli.commands import COMMANDS
from nifti_archive.cli.conversion_commands import CONVERSION_COMMANDS
from nifti_archive.cli.extensions import load as load_extensions
from nifti_archive.cli.parser import build_parser, resolve
from nifti_archive.cli.worker_command import run_worker
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


@contextlib.contextmanager
def _logging_to(settings: Settings) -> Iterator[str | None]:
    """Warnings to stderr; everything at the configured level to the log file, if it can be written.

    Yields the log file's path, or None when it cannot be written. On the way out the handlers
    are closed and removed and the root level restored: runs in one process (tests, callers of
    ``run``) would otherwise pile up handlers that write each later message several times.
    """
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(settings.log_level)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(_OneLineFormatter())
    handlers: list[logging.Handler] = [console]
    log_file: str | None = None
    try:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        file_handler = RotatingFileHandler(settings.log_dir / "nora.log", maxBytes=5_000_000, backupCount=3)
    except OSError:
        pass  # no log file: the terminal still gets the warnings
    else:
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
        handlers.append(file_handler)
        log_file = file_handler.baseFilename
    for handler in handlers:
        root.addHandler(handler)
    try:
        yield log_file
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(previous_level)


def _fail(message: str) -> int:
    sys.stderr.write(f"nora: error: {message}\n")
    return EXIT_USAGE


def run(argv: Sequence[str], stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    """Runs one ``nora`` command line and returns its exit code.

    Output goes to ``stdout`` and ``stderr`` (the process's own by default). The settings come
    from the environment as in the installed command, so a caller in the same process (the
    tests) gets what the command would print and return.
    """
    # argparse (--help) and the commands write to sys.stdout and sys.stderr themselves.
    with contextlib.redirect_stdout(sys.stdout if stdout is None else stdout), \
            contextlib.redirect_stderr(sys.stderr if stderr is None else stderr):
        try:
            return _run(list(argv))
        except SystemExit as exc:  # argparse's --help ends with sys.exit(0)
            return exc.code if isinstance(exc.code, int) else EXIT_OK if exc.code is None else EXIT_INTERNAL


def _run(argv: list[str]) -> int:
    if remote.active():
        return _run_remote(argv)
    admin_argv = argv[argv.index("--admin") + 1 :] if "--admin" in argv else None
    worker_argv = argv[1:] if argv[:1] == ["worker"] else None
    extensions = load_extensions() if admin_argv is None and worker_argv is None else []
    try:
        if admin_argv is None and worker_argv is None:
            args = build_parser(extensions).parse_args(argv)
        settings = load_settings()
    except ArchiveError as exc:
        return _fail(str(exc))
    with _logging_to(settings) as log_file:
        archive = Archive(settings)
        try:
            if admin_argv is not None:
                run_admin(archive, admin_argv, sys.stdout)
            elif worker_argv is not None:
                run_worker(archive, worker_argv, sys.stdout)
            else:
                request = resolve(args, extensions)
                archive.check_schema()
                commands = {**COMMANDS, **CONVERSION_COMMANDS, **BIDS_COMMANDS}
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
