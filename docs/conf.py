"""Sphinx configuration of fastnorm's reference site: ``python -m sphinx -W -b html docs docs/_build`` (CI builds it
with warnings as errors, so a docstring that names a parameter the function no longer has fails the build)."""
import fastnorm

project = "fastnorm"
release = fastnorm.__version__
extensions = ["sphinx.ext.autodoc", "numpydoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "benchmarks/*", "img/*"]
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the signatures are in the docstrings' Parameters sections
# scikit-learn's metadata-routing setters, which its metaclass adds to every estimator
autodoc_default_options = {"exclude-members": "set_fit_request, set_partial_fit_request, set_transform_request, "
                                            "set_inverse_transform_request"}
numpydoc_show_class_members = False
# PR01: a parameter the docstring does not describe; PR02: a described parameter the signature does not have.
numpydoc_validation_checks = {"PR01", "PR02"}
# Not yet held to PR01: data classes and exceptions (their fields are attributes), the sklearn estimators' inherited
# methods, and layer methods that take the forward's input or output gradient only.
numpydoc_validation_exclude = {
    r"^fastnorm\.diagnostics\.(TensorStats|LayerStats|ActivationStats)$",
    r"^fastnorm\.gradcheck\.Gradcheck(Report|Error)$",
    r"^fastnorm\.preprocessing\.NotFittedError$",
    r"^fastnorm\.distributed\.Communicator$",  # a Protocol: no constructor of its own
}
myst_heading_anchors = 3
suppress_warnings = ["myst.xref_missing"]
html_theme = "alabaster"
html_title = f"fastnorm {release}"
