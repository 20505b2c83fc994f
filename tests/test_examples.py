"""Every script in ``examples/`` runs in CI.

The gallery's ``plot_*`` scripts run when the docs are built with the gallery
(``tests/test_docs.py`` with ``SKINFLUENCE_DOCS_GALLERY=1``, as ``.ci/run`` does); every
other example runs here, with ``--quick`` (its small smoke run), under the same switch.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def _gallery_pattern():
    conf = (ROOT / "docs" / "conf.py").read_text()
    return re.search(r'"filename_pattern":\s*r?"([^"]+)"', conf).group(1)


def test_every_example_is_run_by_the_gallery_or_here():
    pattern = _gallery_pattern()
    gallery = [p for p in EXAMPLES if re.search(pattern, "/" + p.name)]
    others = [p for p in EXAMPLES if p not in gallery]
    assert gallery, "the docs gallery runs no example"
    for path in others:          # an example outside the gallery must have its smoke run
        assert "--quick" in path.read_text(), f"{path.name} has no --quick smoke run for CI"


@pytest.mark.skipif(os.environ.get("SKINFLUENCE_DOCS_GALLERY") != "1",
                    reason="the examples run in CI (SKINFLUENCE_DOCS_GALLERY=1), a few minutes each")
@pytest.mark.parametrize("path", [p for p in EXAMPLES if not re.search(_gallery_pattern(), "/" + p.name)],
                         ids=lambda p: p.name)
def test_example_outside_the_gallery_runs(path, tmp_path):
    run = subprocess.run([sys.executable, str(path), str(tmp_path / "figure.png"), "--quick"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=1200,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                              "MPLBACKEND": "Agg"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "figure.png").exists()
