"""Every public function and class documents each parameter of its signature in a numpydoc Parameters section
(the reference site's PR01 / PR02 checks, here without Sphinx), and the shared-section helper refuses gaps."""
import importlib
import inspect
import re

import pytest

from fastnorm._docs import documented

MODULES = ["activations", "normalization", "row_norms", "group_norms", "batch_norm_stages", "losses", "regularization", "statistics", "init",
           "random", "layers", "preprocessing", "diagnostics", "gradcheck", "folding", "distributed", "dask"]
# Data classes and exceptions: their fields are attributes, not parameters.
EXEMPT = {"TensorStats", "LayerStats", "ActivationStats", "GradcheckReport", "GradcheckError", "NotFittedError",
          "Communicator"}


def _public(module):
    mod = importlib.import_module(f"fastnorm.{module}")
    for name in getattr(mod, "__all__", [n for n in dir(mod) if not n.startswith("_")]):
        obj = getattr(mod, name, None)
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == mod.__name__ \
                and name not in EXEMPT:
            yield name, obj


def _documented_names(doc: str):
    section = re.search(r"Parameters\n-{3,}\n(.*?)(\n\n[A-Z][A-Za-z ]+\n-{3,}|\Z)", doc, re.S)
    if section is None:
        return set()
    names = set()
    for line in section.group(1).split("\n"):
        m = re.match(r"^(\*{0,2}[A-Za-z_][\w, *]*?)\s*(:|$)", line)
        if m and not line.startswith(" "):
            names.update(n.strip().lstrip("*") for n in m.group(1).split(","))
    return names


@pytest.mark.parametrize("module", MODULES)
def test_every_parameter_is_documented(module):
    pytest.importorskip("dask") if module == "dask" else None
    missing = {}
    for name, obj in _public(module):
        target = obj.__new__ if hasattr(obj, "_fields") else (obj.__init__ if inspect.isclass(obj) else obj)
        try:
            params = [p for p in inspect.signature(target).parameters if p not in ("self", "cls", "_cls")]
        except (TypeError, ValueError):
            continue
        if params == ["args", "kwargs"] and inspect.isclass(obj):
            continue  # object's own constructor
        gaps = set(params) - _documented_names(inspect.getdoc(obj) or "")
        if gaps:
            missing[name] = sorted(gaps)
    assert not missing, f"parameters without a description: {missing}"


def test_documented_refuses_an_undescribed_or_unknown_parameter():
    with pytest.raises(TypeError, match="no description of parameter"):
        @documented({})
        def f(x, y):
            """Sum."""
    with pytest.raises(TypeError, match="does not have"):
        @documented({"x": ("int", "A value.")}, z=("int", "Another."))
        def g(x):
            """Identity."""


def test_documented_places_the_sections_before_the_references():
    @documented({"x": ("int", "A value.")}, returns=("int", "x."), args=("Any", "More."))
    def f(x, *args):
        """Identity.

        References
        ----------
        Someone, 2024.
        """
    doc = f.__doc__
    assert doc.index("Parameters") < doc.index("Returns") < doc.index("References")
    assert "\n*args : Any\n" in doc and "\nx : int\n    A value.\n" in doc
