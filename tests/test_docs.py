"""The documentation builds with warnings as errors (``sphinx -W``).

The gallery is rendered without running the examples unless
``SKINFLUENCE_DOCS_GALLERY=1`` (set by CI's ``.ci/run``: then every example runs and its
figure is in the pages). Any warning (numpydoc's docstring checks included) fails.
"""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_with_warnings_as_errors(tmp_path):
    pytest.importorskip("sphinx", reason="sphinx is not installed: pip install -e '.[docs]'")
    pytest.importorskip("numpydoc", reason="numpydoc is not installed: pip install -e '.[docs]'")
    pytest.importorskip("sphinx_gallery", reason="sphinx-gallery is not installed: pip install -e '.[docs]'")
    warnings_file = tmp_path / "warnings.txt"
    gallery = os.environ.get("SKINFLUENCE_DOCS_GALLERY") == "1"
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-D", f"plot_gallery={int(gallery)}", "-w", str(warnings_file), str(ROOT / "docs"), str(tmp_path / "html")],
        capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"})
    text = warnings_file.read_text() if warnings_file.exists() else ""
    # one warning per entry: numpydoc's span several lines (indented continuation)
    entries = [e.strip() for e in re.split(r"\n(?=\S)", text) if e.strip()]
    assert build.returncode == 0 and not entries, "documentation warnings:\n" + "\n".join(entries) \
        + build.stderr[-3000:]
    assert (tmp_path / "html" / "index.html").exists()
    assert (tmp_path / "html" / "auto_examples" / "plot_data_cleaning.html").exists()
    if gallery:
        assert list((tmp_path / "html" / "_images").glob("sphx_glr_plot_data_cleaning_001.png"))


def _guide_pages():
    pages = {}
    for page in sorted((ROOT / "docs" / "user_guide").glob("*.rst")):
        blocks = re.findall(r"^\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)", page.read_text(), flags=re.M)
        if blocks:
            pages[page.stem] = "\n".join(textwrap.dedent(b) for b in blocks)
    return pages


@pytest.mark.parametrize("page, code", sorted(_guide_pages().items()), ids=sorted(_guide_pages()))
def test_user_guide_code_runs(page, code, tmp_path):
    """A page's python blocks, run in order in a fresh interpreter, as a reader would paste them."""
    run = subprocess.run([sys.executable, "-"], input=code, capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"},
                         timeout=600)
    assert run.returncode == 0, f"docs/user_guide/{page}.rst:\n{run.stderr[-3000:]}"
