"""The first Python code that runs inside the sandbox, before the untrusted program.

It is not imported on the host: `sandbox.runner` compiles this file and ships the
bytecode into the sandbox, where the interpreter runs it as its script. It must therefore stand alone (standard library
only) and stay cheap: every sandboxed run pays for its imports.

argv: cpu_s memory_bytes max_processes max_file_bytes max_open_files uid gid
program_path workdir library_dir (empty: none). ``memory_bytes`` 0 means no address-space limit;
``uid`` -1 means keep the current uid (user-namespace mode, where the kernel
already counts processes per sandbox).
"""

import _signal
import os
import resource
import sys


def _limit_and_drop(argv):
    cpu_s, memory, nproc, fsize, nofile, uid, gid = (int(a) for a in argv[:7])
    # The hard CPU limit sits one second above the soft one so that a spinning
    # program first gets SIGXCPU (reported as a timeout) rather than SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    if memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if uid >= 0:
        # Root on the host runs bwrap without a user namespace; RLIMIT_NPROC is
        # ignored for uid 0, so the program gets a uid of its own. The change of
        # uid also clears every capability this process was started with.
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)


def _on_cpu_limit(signum, frame):
    # The program is pid 1 of its namespace, for which the kernel drops SIGXCPU's
    # default action: exit explicitly, with the status a killed process would have.
    _flush()
    os._exit(128 + signum)


def _flush():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass


def _exit_status(code):
    # What the interpreter does with SystemExit's argument.
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1


def _finish(status):
    """Shut down as the interpreter would, minus tearing down its own objects.

    Joining non-daemon threads, atexit callbacks and flushing stdout/stderr are
    what a program can observe; freeing every module and type afterwards is not,
    and took ~2 ms of each run. Buffers of files the program left open are lost,
    but the files vanish with the sandbox anyway.
    """
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        import atexit

        atexit._run_exitfuncs()
    except BaseException:
        pass
    _flush()
    os._exit(status)


def _run_program(path, workdir, library_dir):
    import builtins

    main = type(sys)("__main__")
    main.__file__ = path
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    sys.argv = [path]
    sys.path.insert(0, workdir)
    if library_dir:
        sys.path.insert(1, library_dir)
    with open(path, "rb") as f:
        source = f.read()
    try:
        exec(compile(source, path, "exec", dont_inherit=True), main.__dict__)
    except SystemExit as stop:
        return _exit_status(stop.code)
    except BaseException as err:
        # Show the program's own frames only, as `python main.py` would.
        err.__traceback__ = err.__traceback__.tb_next
        try:
            sys.excepthook(type(err), err, err.__traceback__)
        except BaseException:
            pass
        return 1
    return 0


_signal.signal(_signal.SIGXCPU, _on_cpu_limit)
_limit_and_drop(sys.argv[1:])
_finish(_run_program(sys.argv[8], sys.argv[9], sys.argv[10]))
