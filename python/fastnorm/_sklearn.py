"""scikit-learn's estimator protocol for the preprocessing estimators, with or without scikit-learn installed.

With scikit-learn, the estimators derive from its ``TransformerMixin`` and ``BaseEstimator``: ``get_params`` /
``set_params`` / ``clone``, tags, ``set_output(transform="pandas")``, feature names and ``n_features_in_`` checks
are scikit-learn's own, so pipelines, grid searches and ``check_estimator`` see ordinary transformers.  Without
it (``import fastnorm`` never needs it), a small stand-in gives the same ``get_params`` / ``set_params`` /
``fit_transform`` and ``n_features_in_`` / ``feature_names_in_``; ``set_output`` then supports only the default
output, and says that pandas output needs scikit-learn.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import numpy as np


class _Estimator:
    """get_params / set_params from the constructor's signature, as scikit-learn's BaseEstimator (used without
    scikit-learn, and by type checkers, which scikit-learn gives no types to)."""

    @classmethod
    def _get_param_names(cls) -> List[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values()
                      if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def get_params(self, deep: bool = True) -> Dict[str, Any]:
        """The constructor's parameters, by name."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> Any:
        """Sets constructor parameters by name; returns the estimator."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"{name}: not a parameter of {type(self).__name__}; valid: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class _TransformerMixin:
    """fit_transform and set_output, as scikit-learn's TransformerMixin (pandas output needs scikit-learn)."""

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
        """fit, then transform."""
        return self.fit(X, y, **fit_params).transform(X)  # type: ignore[attr-defined]

    def set_output(self, *, transform: Optional[str] = None) -> Any:
        """Only the default output without scikit-learn."""
        if transform not in (None, "default"):
            raise ValueError(f"transform: {transform!r} output needs scikit-learn installed; only 'default' "
                             "works without it")
        return self


if TYPE_CHECKING:  # the typed stand-ins: scikit-learn ships no types
    BaseEstimator = _Estimator
    TransformerMixin = _TransformerMixin
    HAVE_SKLEARN = True
else:
    try:
        from sklearn.base import BaseEstimator, TransformerMixin
        HAVE_SKLEARN = True
    except ImportError:  # the same protocol without it
        BaseEstimator, TransformerMixin = _Estimator, _TransformerMixin
        HAVE_SKLEARN = False

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # older scikit-learn, or none
    _sk_validate_data = None


def estimator_input(estimator, x, *, reset: bool):
    """``x`` for an estimator's fit (``reset``) or transform: an ndarray, with scikit-learn's feature-name and
    ``n_features_in_`` bookkeeping (set when ``reset``, checked otherwise), clear errors for sparse and complex data,
    and numbers stored as objects converted to float64."""
    if hasattr(x, "toarray") and hasattr(x, "nnz"):
        raise TypeError("x: sparse input is not supported; densify it first (x.toarray())")
    arr = x if type(x) is np.ndarray else np.asarray(x)
    if not reset and getattr(estimator, "n_features_in_", None) is not None and arr.ndim < 2:
        raise ValueError(f"x: expected a 2-d array of (samples, features), got {arr.ndim}-d. Reshape your data "
                         "with x.reshape(-1, 1) for one feature or x.reshape(1, -1) for one sample")
    if HAVE_SKLEARN:
        if _sk_validate_data is not None:
            _sk_validate_data(estimator, x, skip_check_array=True, reset=reset)
        else:
            estimator._validate_data(x, skip_check_array=True, reset=reset)
    if arr.dtype == object:
        arr = arr.astype(np.float64)  # numbers held as Python objects; anything else raises TypeError here
    if arr.dtype.kind == "c":
        raise ValueError("x: Complex data not supported; expected real values")
    if not HAVE_SKLEARN:
        n = arr.shape[1] if arr.ndim >= 2 else None
        if reset:
            estimator.__dict__.pop("n_features_in_", None)
            if n is not None:
                estimator.n_features_in_ = n
            columns = getattr(x, "columns", None)
            if columns is not None and all(isinstance(c, str) for c in columns):
                estimator.feature_names_in_ = np.asarray(list(columns), dtype=object)
        elif n is not None and hasattr(estimator, "n_features_in_") and n != estimator.n_features_in_:
            raise ValueError(f"X has {n} features, but {type(estimator).__name__} is expecting "
                             f"{estimator.n_features_in_} features as input")
    return arr


def feature_names(estimator, input_features) -> np.ndarray:
    """The input feature names (scikit-learn's rule): ``input_features`` if given (checked against the fitted
    names and count), else ``feature_names_in_``, else x0, x1, ..."""
    n = getattr(estimator, "n_features_in_", None)
    fitted = getattr(estimator, "feature_names_in_", None)
    if input_features is None:
        if fitted is not None:
            return np.asarray(fitted, dtype=object)
        if n is None:
            raise ValueError("input_features: needed when the estimator was fitted without feature names or "
                             "counts")
        return np.asarray([f"x{i}" for i in range(n)], dtype=object)
    names = np.asarray(input_features, dtype=object)
    if fitted is not None and not np.array_equal(names, fitted):
        raise ValueError("input_features: not equal to feature_names_in_")
    if n is not None and len(names) != n:
        raise ValueError(f"input_features: expected {n} names, got {len(names)}")
    return names


def prefixed_names(estimator, count: int) -> np.ndarray:
    """Names of new features (components): the lower-cased class name and an index, as scikit-learn's PCA."""
    prefix = type(estimator).__name__.lower()
    return np.asarray([f"{prefix}{i}" for i in range(count)], dtype=object)
