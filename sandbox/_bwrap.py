"""The bubblewrap command line: which namespaces, which mounts, which uid.

Only builds argument lists; starting and watching the process is `sandbox.runner`'s
job. Two modes, chosen by who we are on the host:

- root: bwrap runs privileged (no user namespace) with every capability dropped
  except CAP_SETUID/CAP_SETGID, which the launcher uses once to become a random
  high uid before the program starts. RLIMIT_NPROC is ignored for uid 0 (also for
  uid 0 mapped into a user namespace), hence a real unprivileged uid; a fresh one
  per run so that concurrent sandboxes do not share one process budget.
- anyone else: an unprivileged user namespace (``--unshare-user``) with uid 65534
  inside; the kernel counts RLIMIT_NPROC per user namespace, so each sandbox has
  its own budget. ``--disable-userns`` stops the program from nesting namespaces.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import sys
from pathlib import PurePosixPath

WORKDIR = "/sandbox"
PROGRAM_PATH = "/run/main.py"
LAUNCHER_PATH = "/run/launcher.pyc"
LIBRARY_DIR = "/run/lib"
_NOBODY = 65534
# Host uids handed to sandboxed programs when we are root: far above the ranges
# that distributions and subordinate-uid maps use, so no real account shares them.
_UID_BASE = 1 << 30
_UID_SPAN = 1 << 29


@functools.lru_cache(maxsize=1)
def bwrap_path() -> str | None:
    return shutil.which("bwrap")


@functools.lru_cache(maxsize=1)
def interpreter() -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """The real interpreter binary, the host directories it needs, and those its
    site-packages add (all mounted read-only).

    ``sys.executable`` may be a venv symlink; the binary it points to lives under
    ``sys.base_prefix``. ``sys.prefix`` (the venv) only matters for site-packages.
    """
    exe = os.path.realpath(sys.executable)
    core = _outermost([os.path.realpath(sys.base_prefix), os.path.dirname(os.path.dirname(exe))])
    site = [d for d in _outermost([os.path.realpath(sys.prefix)]) if not any(_inside(d, c) for c in core)]
    return exe, tuple(core), tuple(site)


def _outermost(dirs: list[str]) -> list[str]:
    # /usr is always mounted whole, and a directory inside another is covered by it.
    dirs = [d for d in dict.fromkeys(dirs) if not _inside(d, "/usr")]
    return [d for d in dirs if not any(o != d and _inside(d, o) for o in dirs)]


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@functools.lru_cache(maxsize=2)
def _system_mounts(site_packages: bool) -> tuple[str, ...]:
    args = ["--ro-bind", "/usr", "/usr"]
    # Merged-/usr systems have /lib, /bin... as symlinks into /usr: recreate the
    # links (cheaper than a bind mount each); older layouts get read-only binds.
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    made: set[str] = set()
    _, core, site = interpreter()
    for d in core + (site if site_packages else ()):
        # bwrap would create the missing parents (/root, /work, ...) as 0700, which
        # the unprivileged uid could not traverse.
        for parent in reversed(PurePosixPath(d).parents[:-1]):
            if str(parent) == "/tmp":  # already the sandbox's own tmpfs, world-writable: leave it
                continue
            if str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", d, d]
    return tuple(args)


def sandbox_uid() -> tuple[int, int]:
    """(uid, gid) the launcher switches to; (-1, -1) where the namespace already did."""
    if os.geteuid() != 0:
        return -1, -1
    uid = _UID_BASE + secrets.randbelow(_UID_SPAN)
    return uid, uid


# Device nodes programs actually open, instead of bwrap's --dev (a dozen mounts,
# about 2 ms of every run); the rest of /dev is symlinks, which cost nothing.
_DEVICES = ("--perms", "0755", "--dir", "/dev", "--dev-bind", "/dev/null", "/dev/null", "--dev-bind", "/dev/zero", "/dev/zero",
            "--dev-bind", "/dev/urandom", "/dev/urandom", "--symlink", "urandom", "/dev/random",
            "--symlink", "/proc/self/fd", "/dev/fd", "--symlink", "/proc/self/fd/0", "/dev/stdin",
            "--symlink", "/proc/self/fd/1", "/dev/stdout", "--symlink", "/proc/self/fd/2", "/dev/stderr",
            "--symlink", "/tmp", "/dev/shm")


def command(*, status_fd: int, launcher_fd: int, program_fd: int, files: list[tuple[int, str]],
            libraries: list[tuple[int, str]], disk_bytes: int, site_packages: bool,
            python_args: list[str]) -> list[str]:
    """bwrap argv that runs ``python_args`` (an interpreter command line) isolated.

    ``launcher_fd`` (compiled launcher), ``program_fd``, each ``(fd, name)`` in
    ``files`` and in ``libraries`` are readable file descriptors whose content
    bwrap copies into the sandbox, at LAUNCHER_PATH, PROGRAM_PATH, under WORKDIR
    (writable) and under LIBRARY_DIR (read-only to the program).
    """
    bwrap = bwrap_path()
    if bwrap is None:
        raise RuntimeError("bwrap not found")  # callers check availability first
    # --as-pid-1: the program itself is pid 1 of its namespace instead of a bwrap
    # reaper (about 5 ms less per run). Everything else in the namespace dies with
    # it, and pid 1 ignores signals from inside the namespace that it has no
    # handler for, so the program cannot kill itself with SIGKILL; orphans become
    # zombies until the run ends.
    args = [bwrap, "--unshare-pid", "--as-pid-1", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if os.geteuid() == 0:
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user", "--disable-userns", "--uid", str(_NOBODY), "--gid", str(_NOBODY)]
    args += ["--die-with-parent", "--new-session", "--hostname", "sandbox",
             "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "HOME", WORKDIR,
             "--setenv", "LANG", "C.UTF-8", "--json-status-fd", str(status_fd)]
    # the private /tmp first: an interpreter or venv that lives under the host's /tmp is then
    # bound read-only on top of it instead of being hidden by it
    args += ["--proc", "/proc", *_DEVICES,
             "--size", str(disk_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
    args += _system_mounts(site_packages)
    args += ["--size", str(disk_bytes), "--perms", "0777", "--tmpfs", WORKDIR,
             "--perms", "0444", "--file", str(launcher_fd), LAUNCHER_PATH,
             "--perms", "0444", "--file", str(program_fd), PROGRAM_PATH]
    for fd, name in files:
        args += ["--perms", "0666", "--file", str(fd), f"{WORKDIR}/{name}"]
    for fd, name in libraries:
        args += ["--perms", "0444", "--file", str(fd), f"{LIBRARY_DIR}/{name}"]
    args += ["--chdir", WORKDIR, "--", *python_args]
    return args
