"""Sphinx configuration for the skinfluence documentation.

Build: ``pip install -e ".[docs]" && python -m sphinx -W -b html docs docs/_build/html``.
The gallery runs the ``plot_*`` scripts in ``examples/`` (17 s to 4.5 minutes each); add
``-D plot_gallery=0`` to render it without running them. Generated pages
(``docs/generated``, ``docs/auto_examples``) and ``docs/_build`` are ignored by git.
"""

from pathlib import Path

from skinfluence import __version__

project = "skinfluence"
author = "the skinfluence developers"
copyright = "the skinfluence developers, BSD-3-Clause"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]
templates_path = ["_templates"]
exclude_patterns = ["_build", "generated/*.examples", "sg_execution_times.rst"]
autosummary_generate = True
autodoc_typehints = "none"          # the numpydoc Parameters sections say it
numpydoc_show_class_members = False  # the class template lists the methods itself
numpydoc_validation_checks = {"PR01", "PR02", "RT01"}  # every parameter documented, none invented, Returns present
numpydoc_validation_exclude = {r"\.__init__$", r"\.forward$", r"_sklearn_", r"\.set_\w+_request$"}
html_theme = "alabaster"
html_static_path = []

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "reset_modules": ("matplotlib",),
    "doc_module": ("skinfluence",),
    "backreferences_dir": "generated/backreferences",
}

_DOCS = Path(__file__).parent
_LATER = {"architecture"}  # pages another branch adds; listed in a toctree before they exist


def _skip_missing_later_pages(app, docname, source):
    """Drop toctree entries of the pages in ``_LATER`` until their file exists (no -W warning)."""
    missing = [name for name in _LATER if not (_DOCS / f"{name}.rst").exists()]
    if docname == "index" and missing:
        lines = source[0].splitlines()
        source[0] = "\n".join(line for line in lines if line.strip() not in missing) + "\n"


def setup(app):
    app.connect("source-read", _skip_missing_later_pages)
