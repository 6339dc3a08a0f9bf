"""The worker: runs the untrusted solution and answers the harness's requests.

Runs only inside the sandbox, as the module ``_rlkit_worker`` (see
`sandbox._harness` for the whole picture). A request names an operation on the
solution (load it, get a name, call, get an attribute or item, iterate, len,
str, run it as a script on some stdin); the reply is plain data, a handle to an
object kept here, a module name, or the exception raised. Nothing here is
trusted by the harness: whatever this process sends is the solution's claim.
"""

import builtins
import marshal
import os
import sys

from _rlkit_wire import NotPlain, recv_bytes, send, to_plain, write_all

SOLUTION_MODULE = "solution"


def become_worker(req_fd, rep_fd):
    """Leave the worker only its two pipes, stderr, and /dev/null as stdin/stdout."""
    import fcntl

    os.setpgid(0, 0)
    # Out of the way first, so that placing one pipe at 3 or 4 cannot close the other.
    req_fd = fcntl.fcntl(req_fd, fcntl.F_DUPFD, 10)
    rep_fd = fcntl.fcntl(rep_fd, fcntl.F_DUPFD, 10)
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(req_fd, 3)
    os.dup2(rep_fd, 4)
    os.closerange(5, 1 << 16)
    return 3, 4


def serve(req_fd, rep_fd):
    """The worker's loop: answer the harness's requests until its pipe closes."""
    objects = {}
    namespace = {}
    while True:
        try:
            request = marshal.loads(recv_bytes(req_fd))
        except EOFError:
            os._exit(0)
        op = request[0]
        try:
            if op == "load":
                # A real module in sys.modules: dataclasses, pickle and typing look it up there.
                module = type(sys)(SOLUTION_MODULE)
                module.__builtins__ = builtins
                module.__file__ = "solution.py"
                sys.modules[SOLUTION_MODULE] = module
                namespace = module.__dict__
                exec(compile(request[1], "solution.py", "exec", dont_inherit=True), namespace)
                reply = ("ok",)
            elif op == "main":
                reply = _run_main(*request[1:])
            elif op == "get":
                reply = _wrap(namespace[request[1]], objects) if request[1] in namespace else ("missing",)
            elif op == "call":
                args = [_unwrap(a, objects) for a in request[2]]
                kwargs = {k: _unwrap(v, objects) for k, v in request[3].items()}
                result = _wrap(objects[request[1]](*args, **kwargs), objects)
                # Arguments the call may have changed in place go back too.
                after = tuple(_wrap(a, objects) if type(a) in (list, dict, set) else None for a in args)
                reply = result + (after,)
            elif op == "attr":
                reply = _wrap(getattr(objects[request[1]], request[2]), objects)
            elif op == "item":
                reply = _wrap(objects[request[1]][_unwrap(request[2], objects)], objects)
            elif op == "iter":
                reply = _wrap(iter(objects[request[1]]), objects)
            elif op == "next":
                try:
                    reply = _wrap(next(objects[request[1]]), objects)
                except StopIteration:
                    reply = ("stop",)
            elif op == "len":
                reply = ("v", len(objects[request[1]]))
            elif op == "str":
                reply = ("v", str.__str__(str(objects[request[1]])))
            else:
                reply = ("exc", "RuntimeError", f"unknown request {op!r}")
        except BaseException as err:  # the solution's SystemExit included
            reply = ("exc", type(err).__name__, _short(err))
        try:
            send(rep_fd, reply)
        except ValueError as err:  # not marshallable after all (too deep)
            send(rep_fd, ("exc", "ValueError", _short(err)))


def _short(err):
    try:
        return str(err)[:300]
    except BaseException:
        return "?"


def _wrap(value, objects):
    try:
        return ("v", to_plain(value))
    except NotPlain:
        pass
    objects[len(objects)] = value
    if type(value) is type(sys):
        name = value.__dict__.get("__name__")
        return ("m", str.__str__(name) if isinstance(name, str) else "?", len(objects) - 1)
    return ("h", len(objects) - 1, type(value).__name__)


def _unwrap(arg, objects):
    return objects[arg[1]] if arg[0] == "h" else arg[1]


def _run_main(source, stdin, timeout_s, max_output):
    """Run the solution as a script on ``stdin`` in a child; return its output."""
    import select

    out_r, out_w = os.pipe()
    in_fd = os.memfd_create("stdin")
    write_all(in_fd, stdin)
    os.lseek(in_fd, 0, os.SEEK_SET)
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.setpgid(0, 0)
            os.dup2(in_fd, 0)
            os.dup2(out_w, 1)
            os.closerange(3, 1 << 16)
            status = _exec_script(source)
        finally:
            os._exit(status)
    os.close(out_w)
    os.close(in_fd)
    out = bytearray()
    poller = select.poll()
    poller.register(out_r, select.POLLIN)
    deadline = _now() + timeout_s
    verdict = None
    while True:
        left = deadline - _now()
        if left <= 0:
            verdict = "timeout"
            break
        if not poller.poll(left * 1000):
            continue
        chunk = os.read(out_r, 1 << 16)
        if not chunk:
            break
        out += chunk
        if len(out) > max_output:
            verdict = "output_limit"
            break
    os.close(out_r)
    if verdict is not None:
        kill_group(pid)
    _, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    if verdict is None:
        verdict = "ok" if code == 0 else ("killed" if code < 0 else "error")
    return ("out", bytes(out[:max_output]), verdict, code)


def _exec_script(source):
    main = type(sys)("__main__")
    main.__builtins__ = builtins
    main.__file__ = "main.py"
    sys.modules["__main__"] = main
    sys.argv = ["main.py"]
    status = 0
    try:
        exec(compile(source, "main.py", "exec", dont_inherit=True), main.__dict__)
    except SystemExit as stop:
        code = stop.code
        status = 0 if code is None else (code & 0xFF if isinstance(code, int) else 1)
    except BaseException:
        status = 1
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        sys.stdout.flush()
    except BaseException:
        pass
    return status


def _now():
    import time

    return time.monotonic()


def kill_group(pid):
    try:
        os.killpg(pid, 9)
    except OSError:
        pass
