"""Hard time bounds for checks that may never finish.

Symbolic algebra (``sympy.simplify`` on an adversarial answer) and untrusted
code can run for hours. A check therefore runs in a persistent worker process;
the caller waits on the worker's pipe with a deadline and, once the deadline
has passed, kills the worker and starts a fresh one. No signals are involved,
so the bound holds when called from any thread of any process: a Ray actor's
method thread, a ``ThreadPoolExecutor``, the learner's main loop. (``SIGALRM``
only works in the main thread of the main interpreter.)

A worker is a fresh interpreter (``python -m rewards._timeout``) talking
pickle frames over its stdin/stdout, not a ``multiprocessing`` child: so
it never re-imports the caller's ``__main__`` (no ``if __name__ ==
"__main__"`` guard needed), it can be started from daemonic processes, and no
process holding threads and locks is ever forked.

Usage::

    pool = KillablePool(size=2, preload=("my_pkg.checks",))
    outcomes = pool.run(my_pkg.checks.check, [(a1, b1), (a2, b2)], timeout_s=2.0)
    outcomes[0].ok, outcomes[0].value, outcomes[0].timed_out

``fn`` must be importable by name (a module-level function) and its arguments
and result picklable. The deadline of a job starts when a ready worker takes
it, so the time a worker needs to start is never charged to a check. A worker
killed at a deadline is replaced in the background.
"""

from __future__ import annotations

import atexit
import importlib
import os
import pickle
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for_fds
from typing import Any, Callable, Sequence

__all__ = ["KillablePool", "Outcome", "WorkerStartError"]

_HEADER = struct.Struct("!Q")  # frame length, then that many bytes of pickle


class WorkerStartError(RuntimeError):
    """A worker process could not be started or did not report ready in time."""


@dataclass(frozen=True)
class Outcome:
    """What became of one job."""

    ok: bool  # the function returned (``value`` holds its result)
    value: Any = None
    timed_out: bool = False  # the deadline passed; the worker was killed
    error: str | None = None  # the exception text, or why the worker died


def _write_frame(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("worker pipe closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int) -> Any:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size))
    return pickle.loads(_read_exact(fd, size))


def _worker_main(preload: Sequence[str]) -> None:
    # Frames travel on the original stdout; anything a library prints goes to stderr.
    out_fd, in_fd = os.dup(1), 0
    os.dup2(2, 1)
    for name in preload:
        module = importlib.import_module(name)
        # A module may pay its one-time costs (a parser's tables) here, before "ready": the
        # first check's deadline then never includes them, however loaded the machine is.
        warm = getattr(module, "warm_worker", None)
        if callable(warm):
            warm()
    _write_frame(out_fd, ("ready", os.getpid()))
    while True:
        try:
            job = _read_frame(in_fd)
        except EOFError:
            return
        if job is None:
            return
        fn, args = job
        try:
            reply = (True, fn(*args))
        except Exception as exc:  # the caller decides what a failed check means
            reply = (False, f"{type(exc).__name__}: {exc}")
        try:
            _write_frame(out_fd, reply)
        except Exception as exc:  # e.g. an unpicklable result
            _write_frame(out_fd, (False, f"result could not be sent back: {type(exc).__name__}: {exc}"))


class _Worker:
    def __init__(self, preload: tuple[str, ...]) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # see what the caller sees
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rewards._timeout", *preload],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0, close_fds=True)
        except OSError as exc:
            raise WorkerStartError(f"could not start a check worker: {exc}") from exc
        self.to_fd = self.proc.stdin.fileno()
        self.from_fd = self.proc.stdout.fileno()
        self.ready = False

    def fileno(self) -> int:  # lets multiprocessing.connection.wait select on workers
        return self.from_fd

    def wait_ready(self, timeout_s: float) -> None:
        if self.ready:
            return
        if not wait_for_fds([self], timeout_s):
            self.kill()
            raise WorkerStartError(f"check worker did not start within {timeout_s:.0f} s")
        try:
            tag, _ = _read_frame(self.from_fd)
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            self.kill()
            raise WorkerStartError(f"check worker died while starting (exit code {self.proc.poll()})") from exc
        if tag != "ready":
            self.kill()
            raise WorkerStartError(f"check worker sent {tag!r} instead of 'ready'")
        self.ready = True

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def close(self) -> None:
        try:
            _write_frame(self.to_fd, None)
            self.proc.wait(timeout=1)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        self.kill()


_LIVE_POOLS: "weakref.WeakSet[KillablePool]" = weakref.WeakSet()


@atexit.register
def _close_live_pools() -> None:
    for pool in list(_LIVE_POOLS):
        pool.close()


class KillablePool:
    """Up to ``size`` persistent worker processes, each job bounded by a deadline.

    Thread-safe: calls to :meth:`run` from several threads take turns (a call
    holds the pool for the length of its batch). Workers start on the first
    call and are stopped by :meth:`close` or at interpreter exit.
    """

    def __init__(self, size: int = 2, preload: Sequence[str] = (), *, start_timeout_s: float = 120.0) -> None:
        if size < 1:
            raise ValueError(f"KillablePool size must be >= 1, got {size}")
        self.size = size
        self.preload = tuple(preload)
        self.start_timeout_s = start_timeout_s
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self.kills = 0  # workers killed at a deadline, over the pool's life
        _LIVE_POOLS.add(self)

    def run(self, fn: Callable[..., Any], args_list: Sequence[tuple], timeout_s: float) -> list[Outcome]:
        """Run ``fn(*args)`` for every ``args`` in ``args_list``, each within ``timeout_s`` seconds.

        Returns one :class:`Outcome` per job, in order. A job past its deadline
        gets ``Outcome(ok=False, timed_out=True)`` and its worker is replaced.
        """
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if not args_list:
            return []
        results: list[Outcome | None] = [None] * len(args_list)
        with self._lock:
            idle = deque(self._start(len(args_list)))
            todo = deque(enumerate(args_list))
            busy: dict[_Worker, tuple[int, float]] = {}  # worker -> (job index, deadline)
            while todo or busy:
                while todo and idle:
                    worker = idle.popleft()
                    if not worker.alive():  # died between jobs
                        worker = self._replace(worker)
                    worker.wait_ready(self.start_timeout_s)  # a replacement may still be starting
                    index, args = todo.popleft()
                    try:
                        payload = pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)
                    except Exception as exc:  # that job fails; the worker is fine
                        results[index] = Outcome(ok=False, error=f"job could not be sent: {type(exc).__name__}: {exc}")
                        idle.append(worker)
                        continue
                    try:
                        view = memoryview(_HEADER.pack(len(payload)) + payload)
                        while view:
                            view = view[os.write(worker.to_fd, view):]
                    except OSError:
                        results[index] = Outcome(ok=False, error="check worker died before taking the job")
                        idle.append(self._replace(worker))
                        continue
                    busy[worker] = (index, time.monotonic() + timeout_s)
                if not busy:
                    continue
                soonest = min(deadline for _, deadline in busy.values())
                for worker in wait_for_fds(list(busy), timeout=max(0.0, soonest - time.monotonic())):
                    index, _ = busy.pop(worker)
                    try:
                        ok, value = _read_frame(worker.from_fd)
                    except (EOFError, OSError, pickle.UnpicklingError):
                        results[index] = Outcome(ok=False, error=f"check worker died (exit code {worker.proc.poll()})")
                        idle.append(self._replace(worker))
                        continue
                    results[index] = Outcome(ok=True, value=value) if ok else Outcome(ok=False, error=value)
                    idle.append(worker)
                now = time.monotonic()
                for worker, (index, deadline) in list(busy.items()):
                    if now >= deadline:
                        del busy[worker]
                        self.kills += 1
                        results[index] = Outcome(ok=False, timed_out=True,
                                                 error=f"no answer within {timeout_s:g} s; worker killed")
                        idle.append(self._replace(worker))
        return results  # type: ignore[return-value]

    def broadcast(self, fn: Callable[..., Any], args: tuple = (), timeout_s: float = 30.0) -> list[Outcome]:
        """Run ``fn(*args)`` once in every running worker (to empty a cache, say)."""
        outcomes = []
        with self._lock:
            for worker in [w for w in self._workers if w.alive()]:
                worker.wait_ready(self.start_timeout_s)
                try:
                    _write_frame(worker.to_fd, (fn, args))
                except OSError:
                    outcomes.append(Outcome(ok=False, error="check worker died before taking the job"))
                    self._replace(worker)
                    continue
                if not wait_for_fds([worker], timeout_s):
                    self.kills += 1
                    outcomes.append(Outcome(ok=False, timed_out=True))
                    self._replace(worker)
                    continue
                try:
                    ok, value = _read_frame(worker.from_fd)
                except (EOFError, OSError, pickle.UnpicklingError):
                    outcomes.append(Outcome(ok=False, error="check worker died"))
                    self._replace(worker)
                    continue
                outcomes.append(Outcome(ok=True, value=value) if ok else Outcome(ok=False, error=value))
        return outcomes

    def _start(self, wanted: int) -> list[_Worker]:
        self._workers = [w for w in self._workers if w.alive()]
        while len(self._workers) < min(wanted, self.size):
            self._workers.append(_Worker(self.preload))
        for w in self._workers:  # all starting in parallel; now wait for each
            w.wait_ready(self.start_timeout_s)
        return list(self._workers)

    def _replace(self, worker: _Worker) -> _Worker:
        # The replacement starts in the background and is waited for only when
        # it gets a job, so a timed-out call returns without paying for it.
        worker.kill()
        fresh = _Worker(self.preload)
        self._workers = [fresh if w is worker else w for w in self._workers]
        return fresh

    def close(self) -> None:
        """Stop every worker. The pool stays usable; workers restart on demand."""
        with self._lock:
            for w in self._workers:
                w.close()
            self._workers = []


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
