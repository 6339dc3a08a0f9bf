"""Shared helpers for the sandbox tests: isolation tests need bwrap (skipped without it, failed under CI)."""

from __future__ import annotations

import os

import pytest

needs_bwrap = pytest.mark.requires("bwrap")


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
