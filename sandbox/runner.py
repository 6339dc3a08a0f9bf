"""Run one Python program in the sandbox and report how it ended.

Prepares what goes into the sandbox (the program, stdin and files as memory
files, the compiled launcher and libraries), starts bwrap (or, in the opt-in
unsafe mode, a bare interpreter) and hands the process to `sandbox._watch`.
Thread-safe: concurrent calls share nothing but read-only caches.
"""

from __future__ import annotations

import functools
import importlib.util
import marshal
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

from sandbox import _bwrap
from sandbox._watch import Watch
from sandbox.result import Result

UNSAFE_ENV = "RLKIT_SANDBOX_UNSAFE"
DEFAULT_OUTPUT_LIMIT = 1 << 20  # bytes kept per stream (stdout, stderr)


class SandboxUnavailableError(RuntimeError):
    """bubblewrap is missing and the caller did not opt into the unsafe mode."""


def available() -> bool:
    """True when bubblewrap is installed (isolated runs are possible)."""
    return _bwrap.bwrap_path() is not None


@functools.lru_cache(maxsize=64)
def _pyc(source: str, filename: str) -> bytes:
    """Bytecode file contents for ``source``: the sandbox never spends time compiling it."""
    code = compile(source, filename, "exec", dont_inherit=True)
    # A .pyc header: magic, flags (0: timestamp-based), then 8 bytes of timestamp
    # and size that nothing checks for a script or a module without its source.
    return importlib.util.MAGIC_NUMBER + bytes(12) + marshal.dumps(code)


with open(os.path.join(os.path.dirname(__file__), "_launcher.py"), encoding="utf-8") as _f:
    _LAUNCHER_SOURCE = _f.read()


def run(code: str, *, stdin: str | bytes = "", timeout_s: float = 10.0, memory_mb: int = 1024,
        files: dict[str, str | bytes] | None = None, libraries: dict[str, str] | None = None,
        max_output_bytes: int = DEFAULT_OUTPUT_LIMIT, disk_mb: int = 64, max_processes: int = 64,
        max_open_files: int = 256, site_packages: bool = False, unsafe_no_namespaces: bool = False) -> Result:
    """Run Python source ``code`` isolated; see the `sandbox` package docstring.

    timeout_s: wall-clock limit (CPU time is capped just above it too).
    memory_mb: address-space limit (RLIMIT_AS) per process; 0 disables it.
    files: name -> content written into the private working directory first.
    libraries: module name -> Python source, importable by the program but outside
      its working directory and read-only to it; shipped precompiled.
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
    payload = _Payload(
        program=code.encode(), stdin=stdin.encode() if isinstance(stdin, str) else bytes(stdin),
        files=_check_files(files or {}), libraries=_compile_libraries(libraries or {}))
    unsafe = unsafe_no_namespaces or os.environ.get(UNSAFE_ENV, "") not in ("", "0")
    if not unsafe and not available():
        raise SandboxUnavailableError(
            "sandbox.run needs bubblewrap ('bwrap' on PATH) to isolate untrusted code: install it with "
            "'apt-get install bubblewrap' (Debian/Ubuntu) or 'dnf install bubblewrap' (Fedora). To run "
            f"without isolation anyway (trusted code only), pass unsafe_no_namespaces=True or set {UNSAFE_ENV}=1."
        )
    limits = _Limits(cpu_s=int(timeout_s) + 1, memory=memory_mb << 20, nproc=max_processes,
                     fsize=disk_mb << 20, nofile=max_open_files)
    if unsafe:
        return _run_unsafe(payload, limits, timeout_s, max_output_bytes, site_packages)
    return _run_bwrap(payload, limits, timeout_s, max_output_bytes, site_packages, disk_mb)


@dataclass(frozen=True)
class _Payload:
    program: bytes
    stdin: bytes
    files: dict[str, bytes]
    libraries: dict[str, bytes]  # file name (module.pyc) -> bytecode


@dataclass(frozen=True)
class _Limits:
    cpu_s: int
    memory: int
    nproc: int
    fsize: int
    nofile: int

    def launcher_args(self, uid: int, gid: int, program: str, workdir: str, library_dir: str) -> list[str]:
        numbers = (self.cpu_s, self.memory, self.nproc, self.fsize, self.nofile, uid, gid)
        return [str(v) for v in numbers] + [program, workdir, library_dir]


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


def _compile_libraries(libraries: dict) -> dict[str, bytes]:
    out = {}
    for name, source in libraries.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"library name {name!r} must be a module name (a Python identifier)")
        if not isinstance(source, str):
            raise TypeError(f"library {name!r} must be Python source as a str, got {type(source).__name__}")
        out[f"{name}.pyc"] = _pyc(source, f"{name}.py")
    return out


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _run_bwrap(payload: _Payload, limits: _Limits, timeout_s: float, cap: int, site_packages: bool,
               disk_mb: int) -> Result:
    uid, gid = _bwrap.sandbox_uid()
    fds: list[int] = []

    def memfd(name: str, data: bytes) -> int:
        fds.append(_memfd(name, data))
        return fds[-1]

    try:
        stdin_fd = memfd("stdin", payload.stdin)
        program_fd = memfd("program", payload.program)
        launcher_fd = memfd("launcher", _pyc(_LAUNCHER_SOURCE, "<sandbox launcher>"))
        file_fds = [(memfd("file", data), name) for name, data in payload.files.items()]
        library_fds = [(memfd("library", data), name) for name, data in payload.libraries.items()]
        status_r, status_w = os.pipe()
        fds.append(status_r)
        try:
            library_dir = _bwrap.LIBRARY_DIR if payload.libraries else ""
            python = _python_args(site_packages, _bwrap.LAUNCHER_PATH) + limits.launcher_args(
                uid, gid, _bwrap.PROGRAM_PATH, _bwrap.WORKDIR, library_dir)
            argv = _bwrap.command(status_fd=status_w, launcher_fd=launcher_fd, program_fd=program_fd,
                                  files=file_fds, libraries=library_fds, disk_bytes=disk_mb << 20,
                                  site_packages=site_packages, python_args=python)
            start = time.perf_counter()
            proc = subprocess.Popen(argv, stdin=stdin_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    pass_fds=[status_w] + fds[1:-1], start_new_session=True)
        finally:
            os.close(status_w)
        watch = Watch(proc, cap, status_r)
        watch.until(start + timeout_s)
        return watch.result(start)
    finally:
        for fd in fds:
            os.close(fd)


def _run_unsafe(payload: _Payload, limits: _Limits, timeout_s: float, cap: int, site_packages: bool) -> Result:
    root = tempfile.mkdtemp(prefix="rlkit-unsafe-")
    try:
        workdir = os.path.join(root, "work")
        library_dir = os.path.join(root, "lib")
        program = os.path.join(root, "main.py")
        launcher = os.path.join(root, "launcher.pyc")
        contents = {program: payload.program, launcher: _pyc(_LAUNCHER_SOURCE, "<sandbox launcher>")}
        contents.update({os.path.join(workdir, name): data for name, data in payload.files.items()})
        contents.update({os.path.join(library_dir, name): data for name, data in payload.libraries.items()})
        os.makedirs(workdir)
        for path, data in contents.items():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        stdin_fd = _memfd("stdin", payload.stdin)
        try:
            python = [sys.executable, "-I", launcher] if site_packages else [sys.executable, "-I", "-S", launcher]
            # No namespaces: RLIMIT_NPROC would count every process of our own uid.
            unsafe_limits = _Limits(limits.cpu_s, limits.memory, nproc=4096, fsize=limits.fsize, nofile=limits.nofile)
            argv = python + unsafe_limits.launcher_args(-1, -1, program, workdir,
                                                        library_dir if payload.libraries else "")
            env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "LANG": "C.UTF-8"}
            start = time.perf_counter()
            proc = subprocess.Popen(argv, cwd=workdir, env=env, stdin=stdin_fd, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        finally:
            os.close(stdin_fd)
        watch = Watch(proc, cap, status_fd=None)
        watch.until(start + timeout_s)
        return watch.result(start)
    finally:
        shutil.rmtree(root, ignore_errors=True)
