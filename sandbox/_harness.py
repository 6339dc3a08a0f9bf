"""Runs inside the sandbox and tests an untrusted solution without trusting it.

Runs only inside the sandbox, as the module ``_rlkit_harness`` that
`sandbox.judge` ships (with ``_rlkit_wire`` and ``_rlkit_worker``) and starts,
its instructions (a marshal'd dict) on stdin. Three kinds of process take part:

- the harness (this program, pid 1 of the sandbox's pid namespace) reads the
  instructions, drives the tests and writes one record per test to the host,
  each prefixed by a nonce from the instructions. It never runs solution code.
- a worker runs the solution and answers the harness's requests (call this, get
  that attribute, iterate that). The first worker is forked before the harness
  reads its instructions, so its memory never holds expected values or the
  nonce; after a crash or a timeout a fresh one is exec'd.
- for stdin/stdout tests, one child of the worker per test case.

The harness is out of the workers' reach: it is not dumpable (same-uid processes
cannot ptrace it or open its /proc files), pid 1 ignores signals from inside its
namespace, and workers inherit none of its descriptors besides their two pipes.

Only data crosses from a worker to the harness: marshal bytes checked to hold
plain values (None, bool, int, float, complex, str, bytes, tuple, list, dict,
set, frozenset) before they are loaded. Any other object stays in the worker and
is seen here as a `Remote` handle, which can be called, indexed, iterated or
asked for an attribute, but is equal only to itself and has no truth value. An
assert runs here, on plain values, so an object whose __eq__ always returns True
never takes part in a comparison.

Nothing the solution writes can run here: before the first worker exists the
harness drops every writable directory (the working directory, /tmp) from its
import path, so neither a test's `import` nor a lazy import of the harness can
pick up a planted file. A module object coming back from the worker is a handle
like any other object, except the few standard modules loaded here beforehand
(`_PRELOADED`), for which the test gets this process's copy; a module name from
the worker never causes an import.
"""

import binascii
import builtins
import marshal
import os
import sys

from _rlkit_wire import NotPlain, loads_plain, recv_bytes, send, to_plain, write_all
from _rlkit_worker import become_worker, kill_group, serve


class TestTimeout(BaseException):
    """Raised in the harness when a test's time is up (not catchable as Exception)."""


class ProtocolError(Exception):
    """The worker answered something that is not a valid reply."""


class RemoteError(Exception):
    """The solution raised an exception that is not a built-in one."""


class Worker:
    """The harness's end of one worker process."""

    def __init__(self, pid, req_w, rep_r):
        self.pid, self.req_w, self.rep_r = pid, req_w, rep_r
        self.loaded = False

    @classmethod
    def start(cls, fresh_interpreter):
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                req_fd, rep_fd = become_worker(req_r, rep_w)
                if fresh_interpreter:
                    # The harness now holds the instructions: a worker started after
                    # that gets a new interpreter rather than a copy of this memory.
                    os.set_inheritable(req_fd, True)
                    os.set_inheritable(rep_fd, True)
                    flags = ["-I", "-S"] if sys.flags.no_site else ["-I"]
                    os.execv(sys.executable, [sys.executable, *flags, sys.argv[0], "--worker", "3", "4"])
                serve(req_fd, rep_fd)
            finally:
                os._exit(1)
        os.close(req_r)
        os.close(rep_w)
        return cls(pid, req_w, rep_r)

    def request(self, *message):
        send(self.req_w, message)
        reply = loads_plain(recv_bytes(self.rep_r))
        if type(reply) is not tuple or not reply or type(reply[0]) is not str:
            raise ProtocolError(f"malformed reply {reply!r:.100}")
        return reply

    def stop(self):
        kill_group(self.pid)
        for fd in (self.req_w, self.rep_r):
            os.close(fd)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


class Remote:
    """A solution object that is not plain data, living in the worker."""

    __slots__ = ("_worker", "_id", "_type")

    def __init__(self, worker, object_id, type_name):
        object.__setattr__(self, "_worker", worker)
        object.__setattr__(self, "_id", object_id)
        object.__setattr__(self, "_type", type_name)

    def __call__(self, *args, **kwargs):
        reply = self._worker.request("call", self._id, tuple(_arg(a) for a in args),
                                     {str(k): _arg(v) for k, v in kwargs.items()})
        if reply[0] not in ("v", "h", "m"):
            return _value(self._worker, reply)  # raises the solution's exception
        value = _value(self._worker, reply[:-1])
        after = reply[-1]
        if type(after) is tuple and len(after) == len(args):
            for local, new in zip(args, after):
                _update_in_place(local, new)
        return value

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _value(self._worker, self._worker.request("attr", self._id, name))

    def __getitem__(self, key):
        return _value(self._worker, self._worker.request("item", self._id, _arg(key)))

    def __iter__(self):
        return _value(self._worker, self._worker.request("iter", self._id))

    def __next__(self):
        return _value(self._worker, self._worker.request("next", self._id))

    def __len__(self):
        value = _value(self._worker, self._worker.request("len", self._id))
        if type(value) is not int:
            raise ProtocolError("len() of a solution object must be an int")
        return value

    def __str__(self):
        value = _value(self._worker, self._worker.request("str", self._id))
        if type(value) is not str:
            raise ProtocolError("str() of a solution object must be a str")
        return value

    def __repr__(self):
        return f"<solution {self._type} object>"

    def __bool__(self):
        raise TypeError(f"a solution {self._type} object has no trusted truth value")

    def __setattr__(self, name, value):
        raise TypeError("solution objects cannot be modified from a test")


def _arg(value):
    if type(value) is Remote:
        return ("h", value._id)
    try:
        return ("v", to_plain(value))
    except NotPlain:
        raise TypeError(f"a test cannot pass a {type(value).__name__} to the solution") from None


def _update_in_place(local, reply):
    if reply is None or type(reply) is not tuple or len(reply) != 2 or reply[0] != "v":
        return
    new = reply[1]
    if type(local) is list and type(new) is list:
        local[:] = new
    elif type(local) in (dict, set) and type(new) is type(local):
        local.clear()
        local.update(new)


def _value(worker, reply):
    kind = reply[0]
    if kind == "v" and len(reply) == 2:
        return reply[1]
    if kind == "h" and len(reply) == 3 and type(reply[1]) is int and type(reply[2]) is str:
        return Remote(worker, reply[1], reply[2])
    if kind == "m" and len(reply) == 3 and type(reply[1]) is str and type(reply[2]) is int:
        # A module the solution imported. The name only selects among modules this
        # process loaded itself before any solution code ran; nothing is imported
        # by it. Any other module stays in the worker like any other object.
        trusted = _TRUSTED_MODULES.get(reply[1])
        return trusted if trusted is not None else Remote(worker, reply[2], "module")
    if kind == "stop" and len(reply) == 1:
        raise StopIteration
    if kind == "exc" and len(reply) == 3 and type(reply[1]) is str and type(reply[2]) is str:
        raise _exception(reply[1], reply[2])
    raise ProtocolError(f"malformed reply {reply!r:.100}")


def _exception(name, message):
    cls = getattr(builtins, name, None)
    # Built-in Exception subclasses only: a solution cannot make the harness raise
    # SystemExit, or anything the test did not expect from plain Python. Nor
    # StopIteration: raised by a call inside map() or a generator it would end a
    # loop early and let `all(...)` pass; a remote iterator's real end is ("stop",).
    if (isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == "builtins"
            and not issubclass(cls, (StopIteration, StopAsyncIteration))):
        try:
            return cls(message)
        except Exception:
            pass
    return RemoteError(f"{name}: {message}")


class SolutionNames(dict):
    """Builtins for test code: Python's own first, then the solution's names.

    A test sees real builtins even where the solution redefined them, so that a
    solution cannot swap out `abs`, `sorted` or `isinstance` under its checks.
    """

    def __init__(self, worker):
        super().__init__(vars(builtins))
        self.worker = worker

    def __missing__(self, name):
        reply = self.worker.request("get", name)
        if reply == ("missing",):
            raise KeyError(name)
        value = _value(self.worker, reply)
        self[name] = value
        return value


class Harness:
    def __init__(self, spec, channel):
        self.spec = spec
        self.channel = channel
        self.nonce = spec["nonce"]
        self.worker = None
        self.worker_count = 0

    def record(self, *fields):
        payload = marshal.dumps(fields)
        if fields[0] == "test" and len(payload) > self.spec["max_output"] + 1024:
            payload = marshal.dumps(("test", fields[1], "error", "result larger than the output limit"))
        # One text line per record: the host reads stdout as text.
        write_all(self.channel, self.nonce + b" " + binascii.b2a_base64(payload, newline=False) + b"\n")

    def ensure_worker(self, first_worker):
        if self.worker is None:
            self.worker = first_worker if self.worker_count == 0 else Worker.start(fresh_interpreter=True)
            self.worker_count += 1
        return self.worker

    def drop_worker(self):
        """Kill the worker and everything else but the harness, before a fresh start.

        As pid 1, kill(-1) reaches every other process in the sandbox: the worker,
        its script children and any daemon they left, whatever their group.
        """
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        if os.getpid() == 1:  # never outside a pid namespace (the unsafe mode): -1 is everyone
            try:
                os.kill(-1, 9)
            except ProcessLookupError:
                pass
        _reap_orphans(block=True)

    def run(self, first_worker):
        mode = self.spec["mode"]
        tests = self.spec["tests"]
        timeout = self.spec["timeout_s"]
        stop_early = self.spec["stop_on_failure"]
        load_failure = None
        for index, test in enumerate(tests):
            if load_failure is not None:
                self.record("test", index, *load_failure)
                continue
            worker = self.ensure_worker(first_worker)
            status, payload = "error", ""
            loading = mode != "stdio" and not worker.loaded
            _alarm(timeout + (1.0 if mode == "stdio" else 0.0))
            try:
                if loading:
                    status, payload = self.load(worker)
                    if status != "ok":
                        load_failure = (status, "solution did not load: " + payload)
                        status, payload = load_failure
                        raise _Skip
                    loading = False
                    _alarm(timeout)
                status, payload = getattr(self, "test_" + mode)(worker, test, timeout)
            except _Skip:
                pass
            except TestTimeout:
                status, payload = "timeout", f"over {timeout:g} s"
                if loading:  # module-level code that hangs hangs for every test
                    load_failure = ("timeout", "solution did not load: over the time limit")
                self.drop_worker()
            except (EOFError, OSError, ProtocolError, ValueError) as err:
                # The worker died or talked nonsense: this test fails, the next gets a new one.
                status, payload = "error", f"worker failed: {type(err).__name__}: {err}"[:300]
                self.drop_worker()
            finally:
                _alarm(0)
            self.record("test", index, status, payload)
            if stop_early and status not in ("pass", "ok"):
                for rest in range(index + 1, len(tests)):
                    self.record("test", rest, "skipped", "an earlier test failed")
                break
        self.record("done", len(tests))

    def load(self, worker):
        reply = worker.request("load", self.spec["solution"])
        if reply == ("ok",):
            worker.loaded = True
            return "ok", ""
        try:
            _value(worker, reply)
        except Exception as err:
            return "error", f"{type(err).__name__}: {err}"[:300]
        return "error", "unexpected reply"

    def test_assert(self, worker, source, timeout):
        namespace = {"__builtins__": SolutionNames(worker), "__name__": "__test__"}
        try:
            exec(compile(source, "<test>", "exec", dont_inherit=True), namespace)
        except TestTimeout:
            raise
        except (EOFError, OSError, ProtocolError):
            raise
        except BaseException as err:
            return "fail", f"{type(err).__name__}: {_short(err)}"[:300]
        return "pass", ""

    def test_call(self, worker, args, timeout):
        fn_name = self.spec["fn_name"]
        try:
            # The solution's own name, never a builtin of the same name.
            reply = worker.request("get", fn_name)
            if reply == ("missing",):
                # LeetCode style: a method of class Solution.
                reply = worker.request("get", "Solution")
                if reply == ("missing",):
                    return "error", f"the solution defines no {fn_name!r} (nor Solution.{fn_name})"
                target = getattr(_value(worker, reply)(), fn_name)
            else:
                target = _value(worker, reply)
            value = target(*args)
        except TestTimeout:
            raise
        except (EOFError, OSError, ProtocolError):
            raise
        except BaseException as err:
            return "error", f"{type(err).__name__}: {_short(err)}"[:300]
        if type(value) is Remote:
            return "error", f"returned a {value._type} object, not plain data"
        return "ok", value

    def test_stdio(self, worker, stdin, timeout):
        reply = worker.request("main", self.spec["solution"], stdin, timeout, self.spec["max_output"])
        if (len(reply) != 4 or reply[0] != "out" or type(reply[1]) is not bytes
                or reply[2] not in ("ok", "error", "timeout", "killed", "output_limit")):
            raise ProtocolError("malformed reply to a script run")
        return reply[2], reply[1]


def _short(err):
    try:
        return str(err)[:300]
    except BaseException:
        return "?"


class _Skip(Exception):
    pass


def _on_alarm(signum, frame):
    raise TestTimeout


def _alarm(seconds):
    import _signal

    _signal.setitimer(_signal.ITIMER_REAL, seconds)


def _reap_orphans(block=False):
    # As pid 1, the harness inherits every orphaned process; reap the finished ones
    # so that zombies do not use up the process limit.
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _forbid_inspection():
    """Make this process non-dumpable, so same-uid workers cannot read its memory.

    A process that changed uid (as the launcher does when started as root) is
    already so; then its /proc entries belong to root instead of to its uid.
    """
    if os.stat("/proc/self").st_uid != os.getuid():
        return
    import ctypes

    pr_set_dumpable = 4
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


# Standard modules a test may use through a name the solution imported
# (``assert math.isclose(...)`` after the solution's ``import math``): the test gets
# these copies, loaded here before the solution runs, never the solution's.
_PRELOADED = ("math", "cmath", "itertools", "functools", "operator", "collections", "string")
_TRUSTED_MODULES = {}


def _confine_imports():
    """Leave this process an import path no sandboxed program can write to.

    The working directory, /tmp and anything else writable by this uid is
    writable by the worker too (same uid, same mounts): a module planted there must never run
    here, whether a test imports it or a lazy import inside the harness does.
    Only existing directories that this process cannot write stay on the path.
    Runs before the first worker starts, so before any solution code exists.
    """
    for name in _PRELOADED:
        __import__(name)
    _TRUSTED_MODULES.update((name, sys.modules[name]) for name in _PRELOADED)
    kept = []
    for entry in sys.path:
        if (entry and os.path.isabs(entry) and os.path.isdir(entry) and not os.access(entry, os.W_OK)
                and not _under(entry, os.getcwd())):
            kept.append(entry)
    sys.path[:] = kept
    sys.path_importer_cache.clear()
    sys.dont_write_bytecode = True


def _under(path, root):
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def _read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        sys.path.insert(0, os.getcwd())
        serve(int(sys.argv[2]), int(sys.argv[3]))
        return
    import _signal

    _forbid_inspection()
    first_worker = Worker.start(fresh_interpreter=False)
    # After the fork: the worker keeps the launcher's path (the solution may import
    # its own files); this process drops every writable entry.
    _confine_imports()
    spec = marshal.loads(_read_all(0))
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    channel = os.dup(1)
    os.dup2(null, 1)  # stray prints (an imported module's, say) stay off the channel
    _signal.signal(_signal.SIGALRM, _on_alarm)
    harness = Harness(spec, channel)
    try:
        harness.run(first_worker)
    finally:
        if harness.worker is not None:
            harness.worker.stop()
        elif harness.worker_count == 0:
            first_worker.stop()


if __name__ == "__main__":
    main()
