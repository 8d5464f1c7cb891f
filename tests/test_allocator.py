"""glibc malloc keeps freed memory in osep-nas processes (osep_nas.allocator), unless turned off.

Each case runs in a fresh interpreter: the setting is process-wide and set once.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="the setting is glibc's (Linux)")


def _python(code: str, **env: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), **env))
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


@glibc
def test_set_once_and_described():
    out = _python("from osep_nas import allocator as a; print(a.describe()); print(a.keep_freed_memory(), "
                  "a.keep_freed_memory()); print(a.describe())").splitlines()
    assert out[0] == "malloc as started (not set)"
    assert out[1] == "True True" and out[2].startswith("glibc malloc keeps freed memory (mmap threshold 32 MiB")


@pytest.mark.parametrize("value", ["0", "off"])
def test_turned_off_by_the_environment(value):
    out = _python("from osep_nas import allocator as a; print(a.keep_freed_memory(), a.describe())",
                  OSEP_NAS_KEEP_MEMORY=value)
    assert out == "False malloc as started (off)"


@glibc
def test_a_command_sets_it_before_it_runs():
    code = ("import sys; from osep_nas import allocator; from osep_nas.cli import main; "
            "rc = main(['plan', '58', '58', '3']); print(rc, allocator._state)")
    assert _python(code).splitlines()[-1] == "0 kept"
