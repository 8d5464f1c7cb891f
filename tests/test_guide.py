"""Every quick command of docs/guide.md runs as written (blocks fenced as ```bash quick)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "guide.md"
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar-10-batches-py"


def quick_blocks():
    text = GUIDE.read_text(encoding="utf-8")
    return [m.group(1).strip() for m in re.finditer(r"```bash quick\n(.*?)```", text, re.S)]


def test_guide_has_quick_commands():
    assert len(quick_blocks()) >= 6


@pytest.mark.parametrize("index", range(len(quick_blocks())))
def test_guide_quick_command_runs(index, tmp_path):
    command = quick_blocks()[index]
    if "../shared/data" in command and not SHARED_CIFAR.exists():
        pytest.skip(f"the real CIFAR-10 subset is absent ({SHARED_CIFAR})")
    # outputs go to a fresh folder instead of the checkout's runs/
    command = command.replace("runs/", f"{tmp_path}/runs/")
    (tmp_path / "runs").mkdir()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               MPLBACKEND="Agg")
    proc = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{command}\n--- stdout\n{proc.stdout[-2000:]}\n--- stderr\n{proc.stderr[-2000:]}"
    assert proc.stdout.strip() or list((tmp_path / "runs").iterdir()), "the command printed and wrote nothing"
