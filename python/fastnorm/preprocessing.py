"""Data preprocessing with scikit-learn's manners: ``Standardizer``, ``PCA`` and ``Whitening``.

The lecture: zero-centering always (the mean image, or the per-channel mean: "3 numbers"), normalization by the
standard deviation often, PCA and whitening ("decorrelated data: diagonal covariance; whitened: identity") rarely
for images.  Each class has ``fit``, ``partial_fit`` (for data that arrives in batches: fitting piece by piece
equals fitting the whole, up to rounding), ``transform``, ``fit_transform`` and ``inverse_transform``; fitted
attributes end in ``_``, and using a transform before ``fit`` raises :class:`NotFittedError`.

Statistics are float64 and mergeable: the standardizer keeps :func:`fastnorm.moments` and merges batches with
:func:`fastnorm.merge_moments`; PCA and whitening keep a count, a mean and a scatter matrix (the sum of outer
products of deviations from the mean) and merge them with the same formula (Chan et al. 1979).  Data containing
NaN or infinity is refused by ``fit`` and ``partial_fit`` rather than turned into NaN statistics.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
from typing import Any, Dict, Optional, TYPE_CHECKING
from numpy.typing import ArrayLike

from fastnorm import _C
from fastnorm._array import (as_array, as_buffer, check_out, compute_dtype, deliver, is_dask_array, kernel_output,
                             normalize_axes, result_dtype, storage_dtype)
from fastnorm._docs import documented
from fastnorm._sklearn import BaseEstimator, TransformerMixin, estimator_input, feature_names, prefixed_names
from fastnorm._threads import resolve
from fastnorm._validate import integer, real
from fastnorm.statistics import Moments, Scatter, merge_moments, merge_scatter, moments, scatter


# The estimator methods' parameters, described once (fastnorm._docs).
_EST = {
    "x": ("array_like or dask.array.Array", "The data, samples along axis 0."),
    "y": ("array_like", "Ignored (scikit-learn's protocol); for ``inverse_transform``, the transformed data."),
    "out": ("numpy.ndarray, optional", "Where to write the result (NumPy's out= rules)."),
    "input_features": ("array_like of str, optional", "The input's feature names (default: those seen in fit)."),
}

class _NotFitted(ValueError, AttributeError):
    """scikit-learn's NotFittedError where it is not installed (and for type checkers)."""


if TYPE_CHECKING:
    _NotFittedBase = _NotFitted
else:
    try:
        from sklearn.exceptions import NotFittedError as _NotFittedBase
    except ImportError:
        _NotFittedBase = _NotFitted

_F64 = np.dtype(np.float64)

__all__ = ["NotFittedError", "Standardizer", "PCA", "Whitening"]


class NotFittedError(_NotFittedBase):
    """A transform or fitted attribute was used before ``fit`` (a ValueError and an AttributeError, and
    scikit-learn's NotFittedError where it is installed)."""


class _Transformer(TransformerMixin, BaseEstimator):
    """What the three estimators share: scikit-learn's protocol (fastnorm._sklearn), float32 kept as float32,
    parameters checked when fitting (scikit-learn's rule: the constructor only stores them)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"preserves_dtype": [np.float64, np.float32]}


def _check_not_empty(x: np.ndarray) -> None:
    """Samples along axis 0 and at least one feature (scikit-learn's wording, which its checks look for)."""
    if x.ndim >= 1 and x.shape[0] == 0:
        raise ValueError(f"x: found array with 0 sample(s) (shape={x.shape}) while a minimum of 1 is required.")
    if x.ndim >= 2 and math.prod(x.shape[1:]) == 0:
        raise ValueError(f"x: found array with 0 feature(s) (shape={x.shape}) while a minimum of 1 is required.")


def _refuse_nonfinite(values: np.ndarray, what: str) -> None:
    if not np.isfinite(values).all():
        raise ValueError(f"x: contains NaN or infinity; the {what} would be NaN (clean or impute the data first)")



def _fit_input(estimator, x, reset: bool):
    """x for fit / partial_fit: an ndarray (scikit-learn's bookkeeping, fastnorm's checks), or a Dask array as it
    is (fitted with fastnorm.dask's tree reductions, never loaded whole)."""
    if is_dask_array(x):
        if reset and x.ndim >= 2:
            estimator.n_features_in_ = int(x.shape[1])
        if x.dtype.kind not in "fiub":
            raise TypeError(f"x: expected real data, got dtype {x.dtype}")
        return x
    return as_array(estimator_input(estimator, x, reset=reset), "x")


def _fastnorm_dask():
    from fastnorm import dask as fdask  # imported only for Dask input: Dask is an optional extra
    return fdask


def _lazy_rows(x, feature_shape, transform):
    """``transform`` of a Dask array of samples (N, features...) block of rows by block of rows, lazily, with
    every feature of a row in one block; the result's row shape is what ``transform`` gives for one sample."""
    rows = x.reshape(x.shape[0], -1).rechunk({1: -1})
    probe = transform(np.zeros((1, *feature_shape), x.dtype))
    width = math.prod(probe.shape[1:])
    flat = rows.map_blocks(lambda b: transform(b.reshape(-1, *feature_shape)).reshape(b.shape[0], width),
                           chunks=(rows.chunks[0], (width,)), dtype=probe.dtype,
                           meta=np.empty((0, 0), probe.dtype))
    return flat.reshape((x.shape[0], *probe.shape[1:]))


class Standardizer(_Transformer):
    """Zero-centers and/or scales data to unit variance, with statistics over a choice of axes.

    ``axis`` names the axes the statistics are taken over; the other axes keep one statistic per slot:

    ============================================  ================  ===================
    what                                          data              ``axis``
    ============================================  ================  ===================
    per-feature (scikit-learn's StandardScaler)   (N, D)            ``0`` (the default)
    the mean image, shape (32, 32, 3)             (N, 32, 32, 3)    ``0``
    per-channel mean, NCHW ("3 numbers")          (N, 3, H, W)      ``(0, 2, 3)``
    per-channel mean, channels-last               (N, H, W, 3)      ``(0, 1, 2)``
    ============================================  ================  ===================

    ``transform(x) = (x - mean_) / scale_`` with ``scale_ = sqrt(var_)``; slots with zero variance keep scale 1
    (as scikit-learn does), so constant features become 0 rather than NaN.  Data passed to ``transform`` must have
    the fitted data's number of dimensions and the same sizes on the kept axes; the reduced axes may differ.

    Parameters
    ----------
    axis : int or tuple of int
        The axes reduced.
    with_mean, with_std : bool
        Subtract the mean; divide by the standard deviation.
    ddof : int
        ``var_ = m2 / (count - ddof)``; 0 (the default, as scikit-learn) is the biased variance.
    num_threads : int, optional
        Threads for the statistics and the transform; results do not depend on it.

    Attributes
    ----------
    mean_, var_ : ndarray (float64), the kept axes' shape
    scale_ : ndarray (float64) or None when ``with_std`` is False
    n_samples_seen_ : int, values per slot seen so far
    moments_ : :class:`fastnorm.Moments`, the mergeable statistics behind them
    """
    moments_: Moments
    n_samples_seen_: int
    mean_: np.ndarray
    var_: np.ndarray
    scale_: Optional[np.ndarray]

    def __init__(self, axis: Any = 0, *, with_mean: bool = True, with_std: bool = True, ddof: int = 0,
                 num_threads: Optional[int] = None) -> None:
        self.axis = axis
        self.with_mean = with_mean
        self.with_std = with_std
        self.ddof = ddof
        self.num_threads = num_threads

    def _check_params(self):
        integer(self.ddof, "ddof", 0, "an integer >= 0")
        for name in ("with_mean", "with_std"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"{name}: expected a bool, got {type(getattr(self, name)).__name__}")

    # -- fitting -------------------------------------------------------------------------------------------------
    @documented(_EST, returns=("Standardizer", "self."))
    def fit(self, x: ArrayLike, y: Optional[ArrayLike] = None) -> Standardizer:
        """Computes the statistics of ``x`` (forgetting earlier ones). Returns self."""
        self._reset()
        return self.partial_fit(x)

    @documented(_EST, returns=("Standardizer", "self."))
    def partial_fit(self, x: ArrayLike, y: Optional[ArrayLike] = None) -> Standardizer:
        """Adds ``x`` to the statistics seen so far (merged exactly as if fitted on all the data at once)."""
        self._check_params()
        first = not self.__sklearn_is_fitted__()
        x = _fit_input(self, x, first)
        if first:  # later batches may be empty
            _check_not_empty(x)
        reduced = normalize_axes(self.axis, x.ndim)
        kept = tuple(a for a in range(x.ndim) if a not in reduced)
        if hasattr(self, "moments_"):
            self._check_layout(x)
        else:
            self._ndim, self._reduced, self._kept = x.ndim, reduced, kept
        if is_dask_array(x):
            batch = _fastnorm_dask().moments(x, axis=reduced)
        else:
            batch = moments(x, axis=reduced, num_threads=self.num_threads)
        if batch.count.max(initial=0) > 0:
            _refuse_nonfinite(batch.mean, "mean")
            _refuse_nonfinite(batch.m2, "variance")
        self._set_moments(batch if not hasattr(self, "moments_") else merge_moments(self.moments_, batch))
        return self

    @classmethod
    @documented(_EST, returns=("Standardizer", "A fitted one."),
                moments=("Moments", "The statistics of the data, kept axes' shape."),
                axis=("int or tuple of int, default 0", "The axes the moments reduced, as in the constructor."),
                params=("Any", "The constructor's other arguments."))
    def from_moments(cls, moments: Moments, axis: Any = 0, **params: Any) -> Standardizer:
        """A fitted Standardizer from :class:`fastnorm.Moments` computed elsewhere (merged over pieces, processes
        or machines, or by :func:`fastnorm.dask.moments`), as ``fit`` on all of that data would give."""
        model = cls(axis, **params)
        model._check_params()
        mean = np.asarray(moments.mean, dtype=np.float64)
        axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
        ndim = mean.ndim + len(axes)
        reduced = normalize_axes(axis, ndim)
        model._ndim, model._reduced = ndim, reduced
        model._kept = tuple(a for a in range(ndim) if a not in reduced)
        if model._kept == (1,) and ndim == 2:
            model.n_features_in_ = mean.shape[0]
        model._set_moments(Moments(np.asarray(moments.count, dtype=np.int64), mean,
                                   np.asarray(moments.m2, dtype=np.float64)))
        return model

    def _set_moments(self, merged: Moments) -> None:
        n = int(np.max(merged.count))
        if n <= self.ddof:
            raise ValueError(f"x: the standardizer needs more than ddof={self.ddof} values per slot, got {n}")
        self.moments_, self.n_samples_seen_ = merged, n
        self.mean_ = self.moments_.mean
        self.var_ = self.moments_.var(self.ddof)
        self.scale_ = np.where(self.var_ > 0, np.sqrt(self.var_), 1.0) if self.with_std else None

    def _reset(self):
        for name in ("moments_", "mean_", "var_", "scale_", "n_samples_seen_", "n_features_in_",
                     "feature_names_in_"):
            self.__dict__.pop(name, None)

    def _check_layout(self, x: np.ndarray) -> None:
        fitted = tuple(self.mean_.shape)
        if x.ndim != self._ndim or tuple(x.shape[a] for a in self._kept) != fitted:
            raise ValueError(f"x: shape {x.shape} does not match the fitted data: expected {self._ndim} dimensions "
                             f"with sizes {fitted} on axes {self._kept}")

    @documented(_EST, returns=("numpy.ndarray of str", "The names."))
    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The output features' names: the input's (each output feature is its input feature, standardized)."""
        self._check_fitted()
        return feature_names(self, input_features)

    # -- transforms ----------------------------------------------------------------------------------------------
    @documented(_EST, returns=("numpy.ndarray or dask.array.Array", "The transformed data."))
    def transform(self, x: ArrayLike, *, out: Optional[np.ndarray] = None) -> Any:
        """``(x - mean_) / scale_`` (each part as configured), in x's floating dtype (integers give float64); of a
        Dask array, a lazy Dask array computed block by block."""
        self._check_fitted()
        if is_dask_array(x):
            return self._lazy(self.transform, x)
        x = estimator_input(self, x, reset=False)
        mean = self.mean_ if self.with_mean else np.zeros(self.mean_.shape)
        scale = 1.0 / self.scale_ if self.with_std else np.ones(self.mean_.shape)
        return self._affine(x, mean, scale, np.zeros(self.mean_.shape), out)

    def fit_transform(self, x: ArrayLike, y: Optional[ArrayLike] = None, *, out: Optional[np.ndarray] = None) -> Any:
        return self.fit(x).transform(x, out=out)

    @documented(_EST, returns=("numpy.ndarray or dask.array.Array", "The data."))
    def inverse_transform(self, x: ArrayLike, *, out: Optional[np.ndarray] = None) -> Any:
        """``x * scale_ + mean_``: undoes :meth:`transform` (lazily for a Dask array)."""
        self._check_fitted()
        if is_dask_array(x):
            return self._lazy(self.inverse_transform, x)
        x = estimator_input(self, x, reset=False)
        zeros = np.zeros(self.mean_.shape)
        scale = self.scale_ if self.with_std else np.ones(self.mean_.shape)
        shift = self.mean_ if self.with_mean else zeros
        return self._affine(x, zeros, scale, shift, out)

    def _lazy(self, method, x):
        """``method`` of a Dask array, block by block, with each block holding every kept slot."""
        self._check_layout(x)
        x = x.rechunk({a: -1 for a in self._kept})
        dt = result_dtype(x.dtype)
        return x.map_blocks(method, dtype=dt, meta=np.empty((0,) * x.ndim, dt))

    def _check_fitted(self):
        if not self.__sklearn_is_fitted__():
            raise NotFittedError("this Standardizer is not fitted yet: call fit or partial_fit first")

    def __sklearn_is_fitted__(self) -> bool:
        return "moments_" in self.__dict__

    def _affine(self, x, mean, scale, shift, out):
        """(x - mean) * scale + shift with per-slot float64 parameters broadcast over the reduced axes."""
        x = as_array(x, "x")
        self._check_layout(x)
        compute, result = compute_dtype(x.dtype, "x"), result_dtype(x.dtype)
        if out is not None:
            check_out(out, x.shape, result)
        kept = self._kept
        if not kept or kept == tuple(range(kept[0], kept[-1] + 1)):
            # kept axes are one block: x is (A, C, B) around it, the batch-norm apply kernel's layout
            storage = storage_dtype(x.dtype, "x")
            xb = as_buffer(x, storage)
            C = math.prod(x.shape[a] for a in kept)
            A = math.prod(x.shape[:kept[0]]) if kept else 1
            B = x.size // (A * C) if A * C else 0
            mean, scale, shift = (as_buffer(np.asarray(v), _F64).reshape(-1) for v in (mean, scale, shift))
            buf = kernel_output(out, x.shape, storage, (xb,), (mean, scale, shift))
            _C.bn_apply(xb.reshape(-1), buf.reshape(-1), A, C, B, mean, scale, shift, resolve(self.num_threads))
            return deliver(buf, out, result)
        xb = as_buffer(x, compute)
        shape = [x.shape[a] if a in kept else 1 for a in range(x.ndim)]
        m, s, b = (np.reshape(v, shape).astype(compute) for v in (mean, scale, shift))
        return deliver(((xb - m) * s + b).astype(compute, copy=False), out, result)


class _CovarianceModel(_Transformer):
    """What PCA and Whitening share: rows (N, features...) fitted into a mergeable scatter, then the eigenvectors
    of the covariance, largest variance first, each signed so that its largest-magnitude entry is positive."""

    def fit(self, x: ArrayLike, y: Optional[ArrayLike] = None) -> Any:
        """Fits on ``x`` (forgetting earlier data). Returns self."""
        self._reset()
        self.partial_fit(x)
        self._solve()  # errors (too few samples, too many components) surface here, not at the first transform
        return self

    def partial_fit(self, x: ArrayLike, y: Optional[ArrayLike] = None) -> Any:
        """Adds ``x`` to the data seen so far; the eigendecomposition is recomputed when next needed."""
        self._check_params()
        rows = self._rows(x, fitting=True)
        with np.errstate(invalid="ignore", over="ignore"):  # refused below
            batch = _fastnorm_dask().scatter(rows) if is_dask_array(rows) else scatter(rows)
        _refuse_nonfinite(batch.mean, "covariance")
        _refuse_nonfinite(batch.scatter, "covariance")
        self._scatter = merge_scatter(self._scatter, batch)
        self._solution = None
        return self

    @classmethod
    def from_scatter(cls, scatter: Scatter, feature_shape: Any = None, **params: Any) -> Any:
        """A fitted model from a :class:`fastnorm.Scatter` (computed elsewhere: merged over pieces, processes or
        machines, or by :func:`fastnorm.dask.scatter`), as ``fit`` on all of that data would give.
        ``feature_shape`` is the shape of one sample (default: the scatter's D features, flat); ``params`` are the
        constructor's."""
        model = cls(**params)
        model._check_params()
        mean = np.asarray(scatter.mean, dtype=np.float64)
        D = mean.shape[0] if mean.ndim == 1 else -1
        shape = (D,) if feature_shape is None else tuple(int(n) for n in np.atleast_1d(feature_shape))
        if mean.ndim != 1 or math.prod(shape) != D:
            raise ValueError(f"feature_shape: {shape} does not hold the scatter's {D} features")
        model._reset()
        model._feature_shape = shape
        model.n_features_in_ = shape[0]  # as fit sets it: the size of axis 1
        model._scatter = merge_scatter(Scatter(0, np.zeros(D), np.zeros((D, D))), scatter)
        model._solve()
        return model

    @property
    def scatter_(self) -> Scatter:
        """The fitted data's :class:`fastnorm.Scatter` (count, mean, scatter matrix): mergeable with another's."""
        self._solve()
        return self._scatter

    def fit_transform(self, x: ArrayLike, y: Optional[ArrayLike] = None) -> Any:
        return self.fit(x).transform(x)

    def _reset(self):
        for name in ("_scatter", "n_features_in_", "feature_names_in_"):
            self.__dict__.pop(name, None)
        self._solution = None

    def __sklearn_is_fitted__(self) -> bool:
        return "_scatter" in self.__dict__

    def _rows(self, x, fitting=False) -> np.ndarray:
        """x as (N, features) rows, checking its feature shape against the fitted one."""
        if not fitting and not self.__sklearn_is_fitted__():
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit or partial_fit first")
        first = fitting and not self.__sklearn_is_fitted__()
        x = _fit_input(self, x, first) if fitting else as_array(estimator_input(self, x, reset=False), "x")
        if first:  # later batches may be empty
            _check_not_empty(x)
        if x.ndim < 2:
            raise ValueError(f"x: expected samples along axis 0 and features after it (ndim >= 2), got shape "
                             f"{x.shape}")
        features = x.shape[1:]
        scatter = self.__dict__.get("_scatter")
        if scatter is None:
            if not fitting:
                raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit or partial_fit first")
            self._feature_shape = features
            D = math.prod(features)
            self._scatter = Scatter(0, np.zeros(D), np.zeros((D, D)))
        elif features != self._feature_shape:
            raise ValueError(f"x: {math.prod(features)} features in shape {features}; fitted on "
                             f"{math.prod(self._feature_shape)} in shape {self._feature_shape}")
        return x.reshape(x.shape[0], -1)

    def _solve(self) -> Dict[str, Any]:
        if self.__dict__.get("_solution") is None:
            s = self.__dict__.get("_scatter")
            if s is None:
                raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit or partial_fit first")
            if s.count < 2:
                raise ValueError(f"x: {type(self).__name__} needs at least 2 samples, got {s.count} sample(s)")
            cov = s.scatter / (s.count - 1)
            w, v = np.linalg.eigh(cov)
            w, v = np.maximum(w[::-1], 0.0), v[:, ::-1]
            v *= np.where(v[np.abs(v).argmax(axis=0), np.arange(v.shape[1])] < 0, -1.0, 1.0)
            self._solution = {"covariance": cov, "variances": w, "vectors": v.T, "total": float(np.trace(cov))}
        return self._solution

    # fitted attributes shared by both
    @property
    def mean_(self) -> np.ndarray:
        self._solve()
        return self._scatter.mean

    @property
    def covariance_(self) -> np.ndarray:
        """The data's covariance matrix (divisor n - 1)."""
        return self._solve()["covariance"]

    @property
    def n_samples_seen_(self) -> int:
        self._solve()
        return self._scatter.count

    def _project(self, x, matrix: np.ndarray) -> np.ndarray:
        """(x - mean_) @ matrix in x's floating dtype (float64 for integers)."""
        rows = self._rows(x)
        compute = compute_dtype(rows.dtype, "x")
        # centred around the float64 mean split in two: (x - hi) - lo, hi = mean rounded to the computation's
        # dtype: float32 data whose mean is far above its spread keep their digits
        hi = self.mean_.astype(compute)
        lo = (self.mean_ - hi).astype(compute)
        centered = (np.asarray(rows, dtype=compute) - hi) - lo
        return (centered @ matrix.astype(compute)).astype(result_dtype(rows.dtype), copy=False)

    def _unproject(self, y, matrix: np.ndarray, width: int) -> np.ndarray:
        """y @ matrix + mean_, y being (N, width) rows."""
        y = as_array(y, "x")
        self._solve()
        if y.ndim < 2 or math.prod(y.shape[1:]) != width:
            raise ValueError(f"x: expected (samples, {width}) values to invert, got shape {y.shape}")
        compute = compute_dtype(y.dtype, "x")
        rows = np.asarray(y.reshape(y.shape[0], -1), dtype=compute)
        result = rows @ matrix.astype(compute) + self.mean_.astype(compute)
        return result.astype(result_dtype(y.dtype), copy=False)


class PCA(_CovarianceModel):
    """Principal component analysis from the covariance matrix, with optional whitening.

    x is (N, features...) (features are flattened: images work as they are).  The components are the
    eigenvectors of the covariance (divisor n - 1) with the largest eigenvalues, each signed so its largest-
    magnitude entry is positive (scikit-learn's convention since 1.5); ``transform(x) = (x - mean_) @
    components_.T``, divided by ``sqrt(explained_variance_ + eps)`` with ``whiten=True``: decorrelated data (diagonal
    covariance), whitened data (identity covariance).  Cost: O(N D^2) to fit plus O(D^3) for the eigenvectors,
    fine for D up to a few thousand (CIFAR's 3072); ``partial_fit`` merges scatter matrices, so it matches
    ``fit`` on the whole to rounding.

    Parameters
    ----------
    n_components : int, float in (0, 1), or None
        Components kept: an int; a float keeps the fewest explaining at least that fraction of the variance; None
        keeps min(n_samples, n_features) (as scikit-learn).
    whiten : bool
        Divide each component by its standard deviation.
    eps : float
        Added to the variances before whitening (0: scikit-learn's PCA(whiten=True)); components whose variance
        plus eps is 0 map to 0.

    Attributes
    ----------
    components_ : ndarray (k, D)
    explained_variance_, explained_variance_ratio_, singular_values_ : ndarray (k,)
    mean_ : ndarray (D,)
    covariance_ : ndarray (D, D)
    n_components_, n_features_in_, n_samples_seen_ : int
    """

    def __init__(self, n_components: Any = None, *, whiten: bool = False, eps: float = 0.0) -> None:
        self.n_components = n_components
        self.whiten = whiten
        self.eps = eps

    def _check_params(self):
        n_components = self.n_components
        if n_components is not None:
            if isinstance(n_components, bool) or not isinstance(n_components, numbers.Real):
                raise TypeError(f"n_components: expected an int, a float in (0, 1) or None, got {n_components!r}")
            if isinstance(n_components, numbers.Integral):
                if n_components < 1:
                    raise ValueError(f"n_components: expected >= 1, got {n_components}")
            elif not 0 < n_components < 1:
                raise ValueError(f"n_components: a float must be in (0, 1) (a fraction of variance), got "
                                 f"{n_components}")
        real(self.eps, "eps", minimum=0.0)

    @documented(_EST, returns=("numpy.ndarray of str", "The names."))
    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """pca0, pca1, ...: one name per component."""
        self._solve()
        return prefixed_names(self, self.n_components_)

    def _k(self) -> int:
        sol, s = self._solve(), self._scatter
        limit = min(s.count, s.mean.shape[0])
        k = self.n_components
        if k is None:
            return limit
        if isinstance(k, numbers.Integral):
            if k > limit:
                raise ValueError(f"n_components: {k} is more than min(n_samples, n_features) = min({s.count}, "
                                 f"{s.mean.shape[0]})")
            return int(k)
        ratio = np.cumsum(sol["variances"]) / sol["total"] if sol["total"] > 0 else np.ones(limit)
        return int(min(np.searchsorted(ratio, k, side="right") + 1, limit))

    def fit(self, x: ArrayLike, y: Optional[ArrayLike] = None) -> PCA:
        super().fit(x)
        self._k()
        return self

    @property
    def n_components_(self) -> int:
        return self._k()

    @property
    def components_(self) -> np.ndarray:
        return self._solve()["vectors"][:self._k()]

    @property
    def explained_variance_(self) -> np.ndarray:
        return self._solve()["variances"][:self._k()]

    @property
    def explained_variance_ratio_(self) -> np.ndarray:
        total = self._solve()["total"]
        ev = self.explained_variance_
        return ev / total if total > 0 else np.zeros_like(ev)

    @property
    def singular_values_(self) -> np.ndarray:
        """Singular values of the centered data matrix: ``sqrt(explained_variance_ * (n - 1))``."""
        return np.sqrt(self.explained_variance_ * (self._scatter.count - 1))

    def _stds(self) -> np.ndarray:
        return np.sqrt(self.explained_variance_ + self.eps)

    @documented(_EST, returns=("numpy.ndarray or dask.array.Array", "The transformed data."))
    def transform(self, x: ArrayLike) -> Any:
        """``(x - mean_) @ components_.T``, whitened if configured: (N, ``n_components_``); of a Dask array,
        lazily."""
        if is_dask_array(x):
            return _lazy_rows(x, self._feature_shape, self.transform)
        matrix = self.components_.T
        if self.whiten:
            std = self._stds()
            matrix = matrix * np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
        return self._project(x, matrix)

    @documented(_EST, returns=("numpy.ndarray or dask.array.Array", "The data."))
    def inverse_transform(self, y: ArrayLike) -> np.ndarray:
        """Back to the data space, (N, features...): exact when all components are kept."""
        matrix = self.components_
        if self.whiten:
            matrix = matrix * self._stds()[:, None]
        return self._unproject(y, matrix, self.n_components_).reshape((-1, *self._feature_shape))


@documented({}, method=("{'zca', 'pca'}, default 'zca'", "Which whitening (above)."),
            eps=("float, default 1e-5", "Added to each variance before its inverse square root (> 0)."))
class Whitening(_CovarianceModel):
    """PCA or ZCA whitening: data with identity covariance.

    With the eigendecomposition cov = U diag(lam) U^T (covariance divisor n - 1):

    - ``method="pca"``: ``(x - mean_) @ U diag(1 / sqrt(lam + eps))``: decorrelated and scaled, in the
      eigenbasis (all components kept, largest variance first).
    - ``method="zca"`` (Bell & Sejnowski 1997): ``(x - mean_) @ U diag(1 / sqrt(lam + eps)) U^T``: the whitened
      data closest to the original (for images, it still looks like an image); output shape = input shape.

    ``eps`` (added to each variance) bounds the amplification of near-zero-variance directions (noise); the
    whitened covariance is U diag(lam / (lam + eps)) U^T, the identity to within eps / lam.

    Attributes: ``mean_``, ``covariance_``, ``components_`` (U^T, rows largest variance first),
    ``explained_variance_`` (lam), ``whitening_matrix_`` (applied to centered rows), ``n_features_in_``,
    ``n_samples_seen_``.
    """

    def __init__(self, method: str = "zca", *, eps: float = 1e-5) -> None:
        self.method = method
        self.eps = eps

    def _check_params(self):
        if self.method not in ("pca", "zca"):
            raise ValueError(f"method: expected 'pca' or 'zca', got {self.method!r}")
        real(self.eps, "eps", minimum=0.0)

    @documented(_EST, returns=("numpy.ndarray of str", "The names."))
    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """ZCA: the input's names (whitened data keep their features); PCA: whitening0, whitening1, ..."""
        self._solve()
        if self.method == "zca":
            return feature_names(self, input_features)
        return prefixed_names(self, self._scatter.mean.shape[0])

    @property
    def components_(self) -> np.ndarray:
        return self._solve()["vectors"]

    @property
    def explained_variance_(self) -> np.ndarray:
        return self._solve()["variances"]

    def _matrices(self):
        """(whitening, its inverse): the matrices applied to centered rows and to whitened rows."""
        sol = self._solve()
        if "whitening" not in sol:
            u = sol["vectors"].T
            std = np.sqrt(sol["variances"] + self.eps)
            inv = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
            w, winv = u * inv, std[:, None] * u.T
            if self.method == "zca":
                w, winv = w @ u.T, u @ winv
            sol["whitening"], sol["inverse"] = w, winv
        return sol["whitening"], sol["inverse"]

    @property
    def whitening_matrix_(self) -> np.ndarray:
        return self._matrices()[0]

    @documented(_EST, returns=("numpy.ndarray or dask.array.Array", "The transformed data."))
    def transform(self, x: ArrayLike) -> Any:
        """Whitened x: (N, n_features) for "pca", x's shape for "zca"; of a Dask array, lazily."""
        if is_dask_array(x):
            return _lazy_rows(x, self._feature_shape, self.transform)
        y = self._project(x, self._matrices()[0])
        return y.reshape((-1, *self._feature_shape)) if self.method == "zca" else y

    @documented(_EST, returns=("numpy.ndarray or dask.array.Array", "The data."))
    def inverse_transform(self, y: ArrayLike) -> np.ndarray:
        """Back to the data space, (N, features...)."""
        width = self._scatter.mean.shape[0]
        return self._unproject(y, self._matrices()[1], width).reshape((-1, *self._feature_shape))
