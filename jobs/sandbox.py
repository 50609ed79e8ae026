"""The sandbox a job runs in: Debian's bubblewrap, started as root, dropping to the jobs account.

bwrap runs as root without a user namespace (a mapped uid would be root outside) and
``setpriv`` then drops to the unprivileged jobs account with no capabilities and no way
back. The job sees /usr, a few files of /etc, the Python environment and our packages
(read-only), its own project's tree (read-only), its staging folder (read-write), the
portal's API socket, and private /tmp, /proc and /dev; nothing else of the machine exists
for it: not var/ (secrets, the index database, Orthanc's storage, uploads, logs), not
other projects, not the checkout. It has no network unless the batch asks for it and its
project allows it. Its environment is built from nothing: no secret, no database URL.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nifti_archive.errors import ArchiveError

BWRAP = "/usr/bin/bwrap"
SETPRIV = "/usr/bin/setpriv"
# Where a job finds the portal's Unix socket, whatever the installation's var folder is.
API_SOCKET = PurePosixPath("/run/northanc/portal.sock")
# Single files and small folders of /etc that programs need (user names, name lookup, the
# dynamic linker's cache, time zone, TLS roots, Debian's alternatives); a missing one is skipped.
ETC = ("passwd", "group", "nsswitch.conf", "hosts", "ld.so.cache", "localtime", "ssl", "ca-certificates", "alternatives")
# Folders that exist in the sandbox before the binds (the root and its own mounts).
MOUNTED = (PurePosixPath("/"), PurePosixPath("/tmp"), PurePosixPath("/etc"))
# Debian's merged /usr: the old top-level folders are links into it.
USR_LINKS = ("bin", "sbin", "lib", "lib64")


class SandboxUnavailable(ArchiveError):
    """The machine cannot sandbox jobs (no jobs account); the run fails with this reason."""


@dataclass(frozen=True)
class JobsAccount:
    name: str
    uid: int
    gid: int


def jobs_account(name: str) -> JobsAccount:
    """The unprivileged account jobs run as, with its primary group (``setup.sh`` creates both)."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise SandboxUnavailable(
            f"the jobs account {name!r} does not exist; create it (./setup.sh run does) or set jobs_user"
        ) from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise SandboxUnavailable(f"the jobs account {name!r} is root or in root's group; jobs must not run as root")
    grp.getgrgid(entry.pw_gid)  # a dangling primary group would make setpriv fail later, less clearly
    return JobsAccount(name, entry.pw_uid, entry.pw_gid)


@dataclass(frozen=True)
class Sandbox:
    """What one run may see. Every path is absolute and appears inside at the same place."""

    account: JobsAccount
    software: tuple[Path, ...]  # the Python environment and our packages, read-only
    project_dir: Path  # read-only
    staging: Path  # read-write, owned by the account
    api_socket: Path | None  # the portal's Unix socket, shown at API_SOCKET (when the portal runs)
    network: bool = False
    # Device nodes shown as they are (a training job's GPUs); /dev has only the harmless ones otherwise.
    devices: tuple[Path, ...] = ()
    # Further trees shown read-only (the assistant's models).
    data: tuple[Path, ...] = ()
    # A service that outlives the process starting it stops with its process group instead.
    die_with_parent: bool = True


def gpu_devices() -> tuple[Path, ...]:
    """The NVIDIA device nodes of this machine (none where it has no GPU); CUDA opens them directly."""
    return tuple(sorted(Path("/dev").glob("nvidia*")))


def _ancestors(paths: Iterable[PurePosixPath], bound: Iterable[PurePosixPath]) -> list[PurePosixPath]:
    """Folders to create (0755) so that the account can reach each bound path (bwrap would make
    them 0700); never one inside another bind (that one brings its own) nor a mount of its own."""
    binds = tuple(bound)
    wanted: set[PurePosixPath] = set()
    for path in paths:
        for parent in path.parents:
            if parent not in MOUNTED and not any(parent == b or b in parent.parents for b in binds):
                wanted.add(parent)
    return sorted(wanted, key=lambda p: (len(p.parts), str(p)))


def sandbox_argv(sandbox: Sandbox, command: list[str]) -> list[str]:
    """The bwrap command line that runs ``command`` in ``sandbox`` as the jobs account.

    The environment is not on this line (it would show in ``ps``): the caller starts it with
    ``job_environment``'s dictionary as its whole environment.
    """
    readable = [PurePosixPath(p) for p in (*sandbox.software, sandbox.project_dir, *sandbox.data)]
    writable = PurePosixPath(sandbox.staging)
    binds = [(path, "--ro-bind") for path in readable] + [(writable, "--bind")]
    targets = [*(path for path, _kind in binds), *([API_SOCKET] if sandbox.api_socket else [])]
    argv = [BWRAP, "--ro-bind", "/usr", "/usr"]
    for name in USR_LINKS:
        argv += ["--symlink", f"usr/{name}", f"/{name}"]
    argv += ["--perms", "0755", "--dir", "/etc"]
    for name in ETC:
        argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
    for device in sandbox.devices:
        argv += ["--dev-bind", str(device), str(device)]
    for folder in _ancestors(targets, [path for path, _kind in binds]):
        argv += ["--perms", "0755", "--dir", str(folder)]
    # Shorter paths first, so that a bind inside another one is not hidden by it.
    for path, kind in sorted(binds, key=lambda item: len(item[0].parts)):
        argv += [kind, str(path), str(path)]
    # Connecting needs no write access to the socket's mount; a portal that is not running
    # leaves the socket out, and nora in the job says that it cannot reach the archive.
    if sandbox.api_socket:
        argv += ["--ro-bind-try", str(sandbox.api_socket), str(API_SOCKET)]
    argv += ["--chdir", str(writable)]
    argv += ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
    if not sandbox.network:
        argv.append("--unshare-net")
    if sandbox.die_with_parent:
        argv.append("--die-with-parent")
    argv.append("--")
    argv += [
        SETPRIV, f"--reuid={sandbox.account.uid}", f"--regid={sandbox.account.gid}", "--clear-groups",
        "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", "--",
    ]
    return argv + command


def job_environment(
    values: Mapping[str, str],
    project: str,
    software_bin: Path,
    archive_root: Path,
    api_token: str,
) -> dict[str, str]:
    """A job's whole environment: its argument values, the project, where ``nora`` is and how
    it reaches the archive (the API socket and the run's token); nothing of the runner's own."""
    # Built from nothing, not with processes.child_environment: a job is user code, and the
    # runner's environment and settings carry the database URL and paths to secrets.
    return {
        **values,
        "PATH": f"{software_bin}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "NORA_PROJECT": project,
        # Not a secret: nora in the job prints absolute paths of the (read-only) project tree.
        "NORTHANC_ARCHIVE_ROOT": str(archive_root),
        "NORTHANC_API_SOCKET": str(API_SOCKET),
        "NORTHANC_API_TOKEN": api_token,
    }
