"""Every python block of README.md runs as pasted, in a fresh interpreter; its links stay in the repository."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{k}" for k in range(len(BLOCKS))])
def test_readme_block_runs_as_pasted(code, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    # a fresh interpreter in an empty folder: no names or files from anywhere else
    run = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=600)
    assert run.returncode == 0, f"README block failed:\n{code}\n--- stderr ---\n{run.stderr[-3000:]}"


def test_readme_links_stay_in_the_repository():
    targets = re.findall(r"\]\(([^)#]+)\)", README) + re.findall(r"`((?:\.\./|/)[^`\s]+)`", README)
    for target in targets:
        if re.match(r"https?://", target):
            continue
        path = (ROOT / target).resolve()
        assert ROOT in path.parents or path == ROOT, f"{target} is outside the repository"
        assert path.exists(), f"{target} does not exist"
    for path in re.findall(r"`((?:examples|benchmarks|docs|skinfluence)/[\w/.]+)`", README):
        if "_build" not in path:  # build outputs exist only after a build
            assert (ROOT / path).exists(), f"README names {path}, which does not exist"
