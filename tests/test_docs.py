"""The documentation builds with warnings as errors (``sphinx -W``).

The gallery is rendered without running the examples unless
``SKINFLUENCE_DOCS_GALLERY=1`` (set by CI's ``.ci/run``: then every example runs and its
figure is in the pages). Warnings that come only from docstrings of modules
that another branch is rewriting are reported as an expected failure naming each one;
any other warning fails the test.
"""

import importlib
import inspect
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# docstrings being rewritten elsewhere; their warnings do not fail this test
ELSEWHERE = ("skinfluence/estimators/", "skinfluence/influence.py", "skinfluence/models/",
             "skinfluence/curvature/", "skinfluence/model_selection/", "skinfluence/refit.py",
             "skinfluence/_utils.py")


def _source_of(dotted: str) -> str:
    """The file (relative to the repository) defining a dotted object name, or ''."""
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        try:
            for attr in parts[k:]:
                obj = getattr(obj, attr)
            obj = inspect.unwrap(obj)
            return Path(inspect.getsourcefile(obj)).resolve().relative_to(ROOT).as_posix()
        except (AttributeError, TypeError, ValueError):
            return ""
    return ""


def _origin(warning: str) -> str:
    numpydoc = re.search(r"docstring for '([\w.]+)'", warning)
    if numpydoc:
        return _source_of(numpydoc.group(1))
    path = re.match(r"(/[^:]+):", warning)
    return Path(path.group(1)).resolve().relative_to(ROOT).as_posix() if path and ROOT in Path(
        path.group(1)).resolve().parents else ""


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
    if build.returncode == 0:
        assert not entries
        assert (tmp_path / "html" / "index.html").exists()
        assert (tmp_path / "html" / "auto_examples" / "plot_data_cleaning.html").exists()
        if gallery:
            assert list((tmp_path / "html" / "_images").glob("sphx_glr_plot_data_cleaning_001.png"))
        return
    assert entries, build.stderr[-3000:]
    ours = [e for e in entries if not _origin(e).startswith(ELSEWHERE)]
    assert not ours, "documentation warnings:\n" + "\n".join(ours)
    pytest.xfail(f"{len(entries)} warnings, all from docstrings being rewritten on another branch "
                 f"({', '.join(ELSEWHERE)}):\n" + "\n".join(entries))


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
