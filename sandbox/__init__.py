"""Run untrusted Python (model-written solutions) isolated from the host.

    import sandbox
    r = sandbox.run("print(input()[::-1])", stdin="abc", timeout_s=5)
    r.status, r.stdout      # ("ok", "cba\\n")

`run` starts the same interpreter as the caller (``sys.executable``'s real binary,
its prefix mounted read-only) inside bubblewrap and returns a `Result`: status in
{"ok", "error", "timeout", "memory", "killed", "sandbox_error"}, exit code, stdout
and stderr cut at ``max_output_bytes`` (1 MiB each by default, ``truncated`` set),
and wall time. ``files`` go into the private working directory; ``libraries``
(module name -> source) are importable, precompiled and read-only to the program.
`sandbox.judge.run_tests` builds on it to test a solution against unit tests
with results checked outside the untrusted process.

What is protected
- Network: a new network namespace holding only its own loopback; neither the
  host's loopback services nor the outside world can be reached.
- Filesystem: a fresh root with /usr, /lib*, /bin and the interpreter's prefix
  mounted read-only; the working directory (/sandbox) and /tmp are private
  size-limited tmpfs that vanish with the run. Nothing of the host is writable.
- Processes: a new pid namespace in which the program is pid 1 (host processes
  are invisible, /proc is fresh), new IPC and UTS namespaces, a new session (no
  terminal injection). When the program ends or times out every process in the
  namespace is killed, daemons included, before `run` returns.
- Privileges: the program runs as an unprivileged uid with no capabilities and
  no_new_privs: a random high uid when the host caller is root, uid 65534 in a
  user namespace otherwise.
- Resources: RLIMIT_CPU (just above the timeout), RLIMIT_AS (``memory_mb``),
  RLIMIT_NPROC (``max_processes``: fork bombs and thread storms stop there),
  RLIMIT_FSIZE and tmpfs size (``disk_mb``), RLIMIT_NOFILE, RLIMIT_CORE=0; a wall
  clock enforced from the host; output read incrementally and capped.
- Environment: cleared; the program sees only PATH, HOME, LANG (and PWD).

What is not protected
- The kernel itself: namespaces and rlimits are not a VM. A kernel exploit
  escapes. No seccomp filter is installed.
- When the caller is root, the program may still create unprivileged user
  namespaces of its own (inside the same network and pid isolation).
- As pid 1 the program cannot be killed by signals from inside the sandbox
  (not even its own SIGKILL), and its orphaned children stay zombies until the
  run ends; the wall clock and the host's kill still end it.
- CPU and memory are bounded per process, not per sandbox: N processes may use
  N times ``memory_mb`` (at most ``max_processes`` of them); no cgroup is used.
- tmpfs pages count against host memory up to 2 x ``disk_mb`` per run.
- Statuses and outputs are the program's own word: never decide anything on the
  exit code alone (see `sandbox.judge` for how tests are scored).

Without bubblewrap `run` raises `SandboxUnavailableError` (install it with
``apt-get install bubblewrap``) unless the caller opts into the unsafe mode,
``run(..., unsafe_no_namespaces=True)`` or ``RLKIT_SANDBOX_UNSAFE=1`` in the
environment: rlimits, a temporary working directory, a cleared environment and a
killed process group only. That mode is for trusted code and development.
"""

from sandbox.result import STATUSES, Result
from sandbox.runner import DEFAULT_OUTPUT_LIMIT, UNSAFE_ENV, SandboxUnavailableError, available, run

__all__ = ["DEFAULT_OUTPUT_LIMIT", "STATUSES", "UNSAFE_ENV", "Result", "SandboxUnavailableError", "available", "run"]
