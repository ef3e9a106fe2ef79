"""The host allocator settings apply to training processes and yield to the user's own choice."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from lmforge.runtime import allocator

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"LMFORGE_TUNE_MALLOC": "0"}, "LMFORGE_TUNE_MALLOC=0"),
        ({"MALLOC_TRIM_THRESHOLD_": "1000"}, "MALLOC_TRIM_THRESHOLD_ is set"),
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000"}, "GLIBC_TUNABLES sets glibc.malloc"),
        ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "LD_PRELOAD loads jemalloc"),
    ],
)
def test_a_user_choice_is_left_alone(monkeypatch: pytest.MonkeyPatch, env: dict, reason: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert allocator.user_choice() == reason
    assert allocator.tune_malloc() is False


def test_no_choice_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("LMFORGE_TUNE_MALLOC", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD"):
        monkeypatch.delenv(key, raising=False)
    assert allocator.user_choice() is None


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_glibc_accepts_the_settings() -> None:
    # In a child: the settings are process-wide and the test process should keep glibc's defaults.
    code = "from lmforge.runtime.allocator import tune_malloc; print(tune_malloc())"
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
