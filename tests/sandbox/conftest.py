"""Shared helpers for the sandbox tests: skip isolation tests where bwrap is missing."""

from __future__ import annotations

import os

import pytest

import sandbox

needs_bwrap = pytest.mark.skipif(
    not sandbox.available(), reason="bubblewrap is not installed (apt-get install bubblewrap)")


def host_processes_with(needle: str) -> list[int]:
    """Pids of host processes whose command line contains ``needle``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            continue  # exited while we looked
    return found
