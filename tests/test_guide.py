"""Every documented command runs as written: the blocks of README.md and docs/guide.md fenced
as ```bash quick run here (in `make test`); the README's ```bash slow block (the nnictl
experiment) runs in the slow suite, by tests/test_nnictl.py::test_nnictl_end_to_end."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = {"readme": ROOT / "README.md", "guide": ROOT / "docs" / "guide.md"}
GUIDE = DOCS["guide"]
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar-10-batches-py"


def blocks(doc: str, kind: str = "quick"):
    """The command blocks of ``doc`` (readme | guide) fenced as ```bash <kind>."""
    text = DOCS[doc].read_text(encoding="utf-8")
    return [m.group(1).strip() for m in re.finditer(rf"```bash {kind}\n(.*?)```", text, re.S)]


def quick_blocks():
    return blocks("guide")


QUICK = [(doc, i) for doc in DOCS for i in range(len(blocks(doc)))]


def test_docs_have_quick_commands():
    assert len(blocks("guide")) >= 6
    assert len(blocks("readme")) >= 2
    # every shell block of the README is run here or in the slow suite, except set-up (`make`)
    # and placeholders (DIR, <ID>) that no test can fill
    text = DOCS["readme"].read_text(encoding="utf-8")
    for m in re.finditer(r"```bash\n(.*?)```", text, re.S):
        assert m.group(1).lstrip().startswith("make "), f"an unmarked README shell block: {m.group(1)!r}"
    # the slow block is the nnictl example, which test_nnictl runs from a fresh NNI registry
    slow = blocks("readme", "slow")
    assert len(slow) == 1 and slow[0].splitlines()[0].startswith("nnictl create --config examples/search.yml")


@pytest.mark.parametrize("doc, index", QUICK, ids=[f"{d}-{i}" for d, i in QUICK])
def test_quick_command_runs(doc, index, tmp_path):
    command = blocks(doc)[index]
    if "../shared/data" in command and not SHARED_CIFAR.exists():
        pytest.skip(f"the real CIFAR-10 subset is absent ({SHARED_CIFAR})")
    # outputs go to a fresh folder instead of the checkout's runs/
    command = command.replace("runs/", f"{tmp_path}/runs/")
    (tmp_path / "runs").mkdir()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               MPLBACKEND="Agg")
    proc = subprocess.run(["bash", "-e", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"{command}\n--- stdout\n{proc.stdout[-2000:]}\n--- stderr\n{proc.stderr[-2000:]}"
    assert proc.stdout.strip() or list((tmp_path / "runs").iterdir()), "the command printed and wrote nothing"
    assert "Traceback" not in proc.stderr
