"""docs/api.rst documents every exported name: each entry of the ``__all__`` of the package and
of its public modules."""

import importlib
import inspect
import re
from pathlib import Path

import pytest

import skinfluence

ROOT = Path(__file__).resolve().parents[1]
#: the package's public modules: those it exports, and the extension points and helpers
MODULES = [m for m in skinfluence.__all__ if inspect.ismodule(getattr(skinfluence, m))] + [
    "models", "curvature", "plotting", "refit", "models.torch"]


def _documented():
    text = (ROOT / "docs" / "api.rst").read_text()
    names = set(re.findall(r"^   ([A-Za-z_][\w.]*)\s*$", text, flags=re.M))       # autosummary rows
    names |= set(re.findall(r"^\.\. py:\w+:: skinfluence\.([\w.]+)", text, flags=re.M))
    return names


def _exported():
    out = [name for name in skinfluence.__all__ if not inspect.ismodule(getattr(skinfluence, name))]
    for module in MODULES:
        mod = importlib.import_module(f"skinfluence.{module}")
        out += [f"{module}.{name}" for name in getattr(mod, "__all__", [])]
    return out


@pytest.mark.parametrize("name", _exported())
def test_every_exported_name_is_in_the_api_reference(name):
    documented = _documented()
    assert name in documented, f"{name} is exported but not in docs/api.rst"
