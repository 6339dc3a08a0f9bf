"""Watch one started sandbox: drain its output up to a cap, enforce the deadline,
kill the whole pid namespace when needed, and say how the run ended."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time

from sandbox.result import Result

_SIGXCPU_EXIT = 128 + signal.SIGXCPU
# After a kill, how long to keep draining pipes and waiting for the namespace to empty.
_KILL_GRACE_S = 2.0


class Watch:
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
            # The sandbox's pid 1 (the program), seen from here: killing it takes down
            # the whole pid namespace, and its pidfd tells when that is done.
            line = self.status.split(b"\n", 1)[0]
            try:
                info = json.loads(line)
                pidfd = os.pidfd_open(info["child-pid"])
            except (ValueError, KeyError, TypeError, OSError):
                return
            # Had the program already exited and its pid been reused, the pidfd would
            # name a stranger: keep it only if the pid is still in this sandbox's
            # pid namespace (checked after opening, so the answer holds for the pidfd).
            try:
                same = os.stat(f"/proc/{info['child-pid']}/ns/pid").st_ino == info.get("pid-namespace")
            except OSError:
                same = False
            if same:
                self.init_pidfd = pidfd
            else:
                os.close(pidfd)

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
