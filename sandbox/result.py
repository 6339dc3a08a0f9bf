"""What a sandboxed run reports back."""

from __future__ import annotations

from dataclasses import dataclass

STATUSES = ("ok", "error", "timeout", "memory", "killed", "sandbox_error")


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
