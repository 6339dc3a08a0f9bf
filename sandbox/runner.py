"""Run one Python program in the sandbox and report how it ended.

Starts bwrap (or, in the opt-in unsafe mode, a bare interpreter), feeds stdin from
a memory file, reads stdout/stderr incrementally up to a cap, enforces the wall
clock, and kills the whole sandbox on timeout. Thread-safe: concurrent calls share
nothing but read-only caches.
"""

from __future__ import annotations

import importlib.util
import json
import marshal
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

from sandbox import _bwrap

STATUSES = ("ok", "error", "timeout", "memory", "killed", "sandbox_error")
UNSAFE_ENV = "RLKIT_SANDBOX_UNSAFE"
DEFAULT_OUTPUT_LIMIT = 1 << 20  # bytes kept per stream (stdout, stderr)


def _compile_launcher() -> bytes:
    # Shipped as bytecode: compiling its source took ~1.5 ms of every run.
    with open(os.path.join(os.path.dirname(__file__), "_launcher.py"), encoding="utf-8") as f:
        code = compile(f.read(), "<sandbox launcher>", "exec", dont_inherit=True)
    # A .pyc header: magic, flags, then 8 bytes the interpreter skips for a script.
    return importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(code)


_LAUNCHER_PYC = _compile_launcher()
_SIGXCPU_EXIT = 128 + signal.SIGXCPU
# After a kill, how long to keep draining pipes and waiting for the namespace to empty.
_KILL_GRACE_S = 2.0


class SandboxUnavailableError(RuntimeError):
    """bubblewrap is missing and the caller did not opt into the unsafe mode."""


@dataclass(frozen=True)
class Result:
    """How a sandboxed run ended.

    status: "ok" (exit 0), "error" (non-zero exit), "timeout" (wall clock or CPU
    limit), "memory" (died of MemoryError under the address-space limit), "killed"
    (ended by a signal, or by us when its output passed the cap), "sandbox_error"
    (the sandbox itself could not be set up; stderr says why).
    stdout/stderr: decoded as UTF-8 (undecodable bytes replaced), each cut at the
    run's output cap; ``truncated`` says whether either was cut.
    exit_code: the program's exit status (128+N when it died of signal N), None when
    it never started or was killed by us. Everything here comes from untrusted code
    and is only a description: do not grant anything on the strength of it.
    """

    status: str
    exit_code: int | None
    stdout: str
    stderr: str
    truncated: bool
    wall_s: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def available() -> bool:
    """True when bubblewrap is installed (isolated runs are possible)."""
    return _bwrap.bwrap_path() is not None


def run(code: str, *, stdin: str | bytes = "", timeout_s: float = 10.0, memory_mb: int = 1024,
        files: dict[str, str | bytes] | None = None, max_output_bytes: int = DEFAULT_OUTPUT_LIMIT,
        disk_mb: int = 64, max_processes: int = 64, max_open_files: int = 256,
        site_packages: bool = False, unsafe_no_namespaces: bool = False) -> Result:
    """Run Python source ``code`` isolated; see the `sandbox` package docstring.

    timeout_s: wall-clock limit (CPU time is capped just above it too).
    memory_mb: address-space limit (RLIMIT_AS) per process; 0 disables it.
    files: name -> content written into the private working directory first.
    disk_mb: size of each private tmpfs (working directory, /tmp); also the
      largest file the program may write.
    max_processes: processes and threads the program may have at once.
    site_packages: also make the interpreter's site-packages importable (slower
      start-up: the site module runs).
    unsafe_no_namespaces: without bubblewrap, run with resource limits only (no
      namespaces, no private filesystem, no network isolation). Also enabled by the
      environment variable RLKIT_SANDBOX_UNSAFE=1. Never for untrusted code.
    """
    _check_args(code, timeout_s, memory_mb, disk_mb, max_processes, max_output_bytes)
    files = _check_files(files or {})
    unsafe = unsafe_no_namespaces or os.environ.get(UNSAFE_ENV, "") not in ("", "0")
    if not unsafe and not available():
        raise SandboxUnavailableError(
            "sandbox.run needs bubblewrap ('bwrap' on PATH) to isolate untrusted code: install it with "
            "'apt-get install bubblewrap' (Debian/Ubuntu) or 'dnf install bubblewrap' (Fedora). To run "
            f"without isolation anyway (trusted code only), pass unsafe_no_namespaces=True or set {UNSAFE_ENV}=1."
        )
    limits = _Limits(cpu_s=int(timeout_s) + 1, memory=memory_mb << 20, nproc=max_processes,
                     fsize=disk_mb << 20, nofile=max_open_files)
    stdin_bytes = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
    if unsafe:
        return _run_unsafe(code, stdin_bytes, files, limits, timeout_s, max_output_bytes, site_packages)
    return _run_bwrap(code, stdin_bytes, files, limits, timeout_s, max_output_bytes, site_packages, disk_mb)


@dataclass(frozen=True)
class _Limits:
    cpu_s: int
    memory: int
    nproc: int
    fsize: int
    nofile: int

    def launcher_args(self, uid: int, gid: int, program: str, workdir: str) -> list[str]:
        return [str(v) for v in (self.cpu_s, self.memory, self.nproc, self.fsize, self.nofile, uid, gid)] + [
            program, workdir]


def _python_args(site_packages: bool, launcher: str) -> list[str]:
    # -I: ignore PYTHON* variables, the user site and the script's directory;
    # -S: skip the site module, which is most of the interpreter's start-up time.
    if site_packages:
        return [sys.executable, "-I", launcher]
    return [_bwrap.interpreter()[0], "-I", "-S", launcher]


def _check_args(code, timeout_s, memory_mb, disk_mb, max_processes, max_output_bytes) -> None:
    if not isinstance(code, str):
        raise TypeError(f"code must be Python source as a str, got {type(code).__name__}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
    for name, value, low in (("memory_mb", memory_mb, 0), ("disk_mb", disk_mb, 1),
                             ("max_processes", max_processes, 1), ("max_output_bytes", max_output_bytes, 0)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _check_files(files: dict) -> dict[str, bytes]:
    out = {}
    for name, content in files.items():
        parts = PurePosixPath(name).parts if isinstance(name, str) else ()
        if not parts or PurePosixPath(name).is_absolute() or ".." in parts:
            raise ValueError(f"file name {name!r} must be a relative path inside the working directory, without '..'")
        if not isinstance(content, (str, bytes)):
            raise TypeError(f"content of file {name!r} must be str or bytes, got {type(content).__name__}")
        out[str(PurePosixPath(name))] = content.encode() if isinstance(content, str) else content
    return out


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _run_bwrap(code, stdin, files, limits, timeout_s, cap, site_packages, disk_mb) -> Result:
    uid, gid = _bwrap.sandbox_uid()
    fds: list[int] = []
    try:
        stdin_fd = _memfd("stdin", stdin)
        fds.append(stdin_fd)
        program_fd = _memfd("program", code.encode())
        fds.append(program_fd)
        launcher_fd = _memfd("launcher", _LAUNCHER_PYC)
        fds.append(launcher_fd)
        file_fds = []
        for name, data in files.items():
            fd = _memfd("file", data)
            fds.append(fd)
            file_fds.append((fd, name))
        status_r, status_w = os.pipe()
        fds.append(status_r)
        try:
            python = _python_args(site_packages, _bwrap.LAUNCHER_PATH) + limits.launcher_args(
                uid, gid, _bwrap.PROGRAM_PATH, _bwrap.WORKDIR)
            argv = _bwrap.command(status_fd=status_w, launcher_fd=launcher_fd, program_fd=program_fd,
                                  files=file_fds, disk_bytes=disk_mb << 20, site_packages=site_packages,
                                  python_args=python)
            start = time.perf_counter()
            proc = subprocess.Popen(argv, stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=[status_w, launcher_fd, program_fd] + [fd for fd, _ in file_fds],
                                    start_new_session=True)
        finally:
            os.close(status_w)
        watch = _Watch(proc, cap, status_r)
        watch.until(start + timeout_s)
        return watch.result(start)
    finally:
        for fd in fds:
            os.close(fd)


def _run_unsafe(code, stdin, files, limits, timeout_s, cap, site_packages) -> Result:
    root = tempfile.mkdtemp(prefix="rlkit-unsafe-")
    try:
        workdir = os.path.join(root, "work")
        os.makedirs(workdir)
        program = os.path.join(root, "main.py")
        with open(program, "w", encoding="utf-8") as f:
            f.write(code)
        launcher = os.path.join(root, "launcher.pyc")
        with open(launcher, "wb") as f:
            f.write(_LAUNCHER_PYC)
        for name, data in files.items():
            path = os.path.join(workdir, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        stdin_fd = _memfd("stdin", stdin)
        try:
            python = [sys.executable, "-I", launcher] if site_packages else [sys.executable, "-I", "-S", launcher]
            # No namespaces: RLIMIT_NPROC would count every process of our own uid.
            unsafe_limits = _Limits(limits.cpu_s, limits.memory, nproc=4096, fsize=limits.fsize, nofile=limits.nofile)
            env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8"}
            start = time.perf_counter()
            proc = subprocess.Popen(python + unsafe_limits.launcher_args(-1, -1, program, workdir), cwd=workdir,
                                    env=env, stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True)
        finally:
            os.close(stdin_fd)
        watch = _Watch(proc, cap, status_fd=None)
        watch.until(start + timeout_s)
        return watch.result(start)
    finally:
        shutil.rmtree(root, ignore_errors=True)


class _Watch:
    """Drains a running sandbox's pipes, bounded, until it ends or its time is up."""

    def __init__(self, proc: subprocess.Popen, cap: int, status_fd: int | None) -> None:
        self.proc = proc
        self.cap = cap
        self.stdout_fd, self.stderr_fd = proc.stdout.fileno(), proc.stderr.fileno()
        self.out = {self.stdout_fd: bytearray(), self.stderr_fd: bytearray()}
        self.truncated = False
        self.timed_out = False
        self.killed_for_output = False
        self.status = bytearray()
        self.status_fd = status_fd
        self.init_pidfd: int | None = None
        self.sel = selectors.DefaultSelector()
        for f in (proc.stdout, proc.stderr):
            os.set_blocking(f.fileno(), False)
            self.sel.register(f.fileno(), selectors.EVENT_READ)
        if status_fd is not None:
            self.sel.register(status_fd, selectors.EVENT_READ)

    def until(self, deadline: float) -> None:
        try:
            self._drain(deadline)
            if self.sel.get_map():
                if not self.killed_for_output:
                    self.timed_out = True
                self._kill()
                self._drain(time.perf_counter() + _KILL_GRACE_S)
            try:
                self.proc.wait(timeout=_KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                self._kill()
                self.proc.wait()
            self._await_namespace_gone()
        finally:
            self.sel.close()
            self.proc.stdout.close()
            self.proc.stderr.close()
            if self.init_pidfd is not None:
                os.close(self.init_pidfd)

    def _drain(self, deadline: float) -> None:
        while self.sel.get_map():
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            for key, _ in self.sel.select(left):
                fd = key.fd
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    self.sel.unregister(fd)
                    continue
                if fd == self.status_fd:
                    self._on_status(chunk)
                    continue
                buf = self.out[fd]
                room = self.cap - len(buf)
                buf += chunk[:max(room, 0)]
                if len(chunk) > room and not self.killed_for_output:
                    # Past the cap: stop the program rather than drain an endless stream.
                    self.truncated = True
                    self.killed_for_output = True
                    self._kill()

    def _on_status(self, chunk: bytes) -> None:
        self.status += chunk
        if self.init_pidfd is None and b"child-pid" in self.status:
            # bwrap's pid 1 in the sandbox, seen from here: killing it takes down the
            # whole pid namespace, and its pidfd tells when that is done.
            line = self.status.split(b"\n", 1)[0]
            try:
                pid = json.loads(line)["child-pid"]
                self.init_pidfd = os.pidfd_open(pid)
            except (ValueError, KeyError, ProcessLookupError, OSError):
                pass

    def _kill(self) -> None:
        if self.init_pidfd is not None:
            try:
                signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def _await_namespace_gone(self) -> None:
        if self.init_pidfd is not None:
            sel = selectors.DefaultSelector()
            try:
                sel.register(self.init_pidfd, selectors.EVENT_READ)
                sel.select(_KILL_GRACE_S)
            finally:
                sel.close()

    def result(self, start: float) -> Result:
        wall = time.perf_counter() - start
        stdout = bytes(self.out[self.stdout_fd]).decode("utf-8", "replace")
        stderr = bytes(self.out[self.stderr_fd]).decode("utf-8", "replace")
        if self.status_fd is None:
            # Unsafe mode: the interpreter is our direct child; -N means signal N.
            code = self.proc.returncode
            exit_code = None if code is None else (128 - code if code < 0 else code)
        else:
            exit_code = _exit_code(self.status)
        if self.timed_out:
            status, exit_code = "timeout", None
        elif self.killed_for_output:
            status, exit_code = "killed", None
        elif self.status_fd is not None and b"child-pid" not in self.status:
            status = "sandbox_error"
        elif exit_code is None:
            status = "sandbox_error"
        elif exit_code == 0:
            status = "ok"
        elif exit_code == _SIGXCPU_EXIT:
            status = "timeout"
        elif 128 < exit_code <= 128 + 64:
            status = "killed"
        elif exit_code == 1 and _died_of_memory_error(stderr):
            status = "memory"
        else:
            status = "error"
        return Result(status, exit_code, stdout, stderr, self.truncated, wall)


def _exit_code(status: bytes) -> int | None:
    for line in status.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("exit-code"), int):
            return doc["exit-code"]
    return None


def _died_of_memory_error(stderr: str) -> bool:
    tail = stderr.rstrip().rsplit("\n", 1)[-1]
    return tail.startswith("MemoryError")
