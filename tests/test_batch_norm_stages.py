"""Batch normalization in stages (statistics -> apply, gradient sums -> input gradient, running statistics) and the
mergeable scatter matrix: each stage against the fused call's bits and the reference, merged pieces against the
whole, bad input."""
import numpy as np
import pytest

import fastnorm
from helpers import half_dtype

LAYOUTS = [((16, 5), 1), ((4, 3, 6, 5), 1), ((4, 6, 5, 3), -1), ((2, 7, 3, 300), 1)]  # (shape, channel axis)


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, dy


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("activation", [None, "gelu"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("shape,axis", LAYOUTS)
def test_stages_give_the_fused_calls_bits(shape, axis, dtype, activation, threads):
    dtype = np.dtype(dtype) if dtype != "float16" else half_dtype(dtype)
    x, dy = _data(shape, dtype)
    C = shape[axis]
    rng = np.random.default_rng(1)
    gamma, beta = rng.uniform(0.5, 1.5, C), rng.standard_normal(C)
    kw = dict(gamma=gamma, beta=beta, axis=axis, activation=activation, num_threads=threads)
    y, mean, rstd = fastnorm.batch_norm(x, return_stats=True, eps=1e-3, **kw)
    dx, dgamma, dbeta = fastnorm.batch_norm_backward(dy, x, mean, rstd, gamma, beta=beta, axis=axis,
                                                     activation=activation, num_threads=threads)

    stats = fastnorm.batch_norm_stats(x, axis=axis, num_threads=threads)
    assert int(stats.count) == x.size // C and stats.mean.tobytes() == mean.tobytes()
    y2, mean2, rstd2 = fastnorm.batch_norm_apply(x, stats, eps=1e-3, return_stats=True, **kw)
    assert y2.tobytes() == y.tobytes() and rstd2.tobytes() == rstd.tobytes() and mean2.tobytes() == mean.tobytes()
    s_dy, s_dy_xmu = fastnorm.batch_norm_grad_sums(dy, x, mean, rstd=rstd, **kw)
    assert (s_dy_xmu * rstd).astype(dgamma.dtype).tobytes() == dgamma.tobytes()
    assert s_dy.astype(dbeta.dtype).tobytes() == dbeta.tobytes()
    dx2 = fastnorm.batch_norm_input_grad(dy, x, mean, rstd, s_dy, s_dy_xmu, int(stats.count), **kw)
    assert dx2.dtype == dx.dtype and dx2.tobytes() == dx.tobytes()


@pytest.mark.parametrize("shape,axis", LAYOUTS)
def test_statistics_merged_over_pieces_normalize_as_the_whole(shape, axis):
    # the batch split along axis 0 into uneven pieces (one empty), statistics merged: each piece normalized with
    # them, and its input gradient from the summed gradient sums, equals the whole batch's, to float64 rounding
    x, dy = _data(shape, np.float64)
    cuts = [0, 1, 1, shape[0] // 2 + 1, shape[0]]
    pieces = [slice(a, b) for a, b in zip(cuts, cuts[1:])]
    merged = fastnorm.Moments(np.array(0), np.zeros(shape[axis]), np.zeros(shape[axis]))
    for p in pieces:
        merged = fastnorm.merge_moments(merged, fastnorm.batch_norm_stats(x[p], axis=axis))
    y, mean, rstd = fastnorm.batch_norm(x, axis=axis, return_stats=True)
    dx = fastnorm.batch_norm_backward(dy, x, mean, rstd, axis=axis)[0]
    np.testing.assert_allclose(merged.mean, mean, rtol=1e-13)
    sums = [fastnorm.batch_norm_grad_sums(dy[p], x[p], merged.mean, axis=axis) for p in pieces]
    s_dy, s_dy_xmu = sum(s[0] for s in sums), sum(s[1] for s in sums)
    for p in pieces:
        if x[p].size:
            y_p, _, rstd_p = fastnorm.batch_norm_apply(x[p], merged, axis=axis, return_stats=True)
            np.testing.assert_allclose(y_p, y[p], rtol=1e-12, atol=1e-12)
            dx_p = fastnorm.batch_norm_input_grad(dy[p], x[p], merged.mean, rstd_p, s_dy, s_dy_xmu,
                                                  int(merged.count), axis=axis)
            np.testing.assert_allclose(dx_p, dx[p], rtol=1e-11, atol=1e-12)


def test_empty_batch_statistics_are_the_merge_identity():
    m = fastnorm.batch_norm_stats(np.empty((0, 3, 4), np.float32))
    assert int(m.count) == 0 and not m.mean.any() and not m.m2.any()
    other = fastnorm.batch_norm_stats(_data((5, 3, 4), np.float32)[0])
    for merged in (fastnorm.merge_moments(m, other), fastnorm.merge_moments(other, m)):
        assert merged.mean.tobytes() == other.mean.tobytes() and merged.m2.tobytes() == other.m2.tobytes()


@pytest.mark.parametrize("momentum,unbiased", [(0.1, True), (0.3, False), (None, True)])
def test_update_running_stats_as_batch_norm_does(momentum, unbiased):
    x = _data((8, 3, 5), np.float32)[0]
    rm1, rv1, n1 = np.zeros(3, np.float32), np.ones(3, np.float32), np.array(2)
    rm2, rv2, n2 = rm1.copy(), rv1.copy(), n1.copy()
    fastnorm.batch_norm(x, running_mean=rm1, running_var=rv1, momentum=momentum, num_batches_tracked=n1,
                        running_var_unbiased=unbiased)
    fastnorm.update_running_stats(rm2, rv2, fastnorm.batch_norm_stats(x), momentum=momentum,
                                  num_batches_tracked=n2, unbiased=unbiased)
    assert rm1.tobytes() == rm2.tobytes() and rv1.tobytes() == rv2.tobytes() and int(n1) == int(n2) == 3


def test_merge_is_symmetric_bit_for_bit():
    rng = np.random.default_rng(3)
    a = fastnorm.moments(rng.standard_normal((7, 5)) * 1e3 + 1e4, axis=0)
    b = fastnorm.moments(rng.standard_normal((4, 5)) + 3, axis=0)
    ab, ba = fastnorm.merge_moments(a, b), fastnorm.merge_moments(b, a)
    assert ab.mean.tobytes() == ba.mean.tobytes() and ab.m2.tobytes() == ba.m2.tobytes()
    sa = fastnorm.scatter(rng.standard_normal((9, 4)))
    sb = fastnorm.scatter(rng.standard_normal((3, 4)) + 2)
    sab, sba = fastnorm.merge_scatter(sa, sb), fastnorm.merge_scatter(sb, sa)
    assert sab.mean.tobytes() == sba.mean.tobytes() and sab.scatter.tobytes() == sba.scatter.tobytes()


def test_scatter_of_pieces_equals_the_whole_and_fits_models():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 6)) @ rng.standard_normal((6, 6)) + 1e3
    whole = fastnorm.scatter(x)
    assert whole.count == 300
    np.testing.assert_allclose(whole.covariance(), np.cov(x, rowvar=False), rtol=1e-10)
    merged = fastnorm.merge_scatter(fastnorm.scatter(x[:100]), fastnorm.scatter(x[100:]))
    np.testing.assert_allclose(merged.scatter, whole.scatter, rtol=1e-11)
    for cls, params in ((fastnorm.preprocessing.PCA, {"n_components": 3}),
                        (fastnorm.preprocessing.Whitening, {"method": "zca"})):
        fitted = cls(**params).fit(x)
        model = cls.from_scatter(merged, **params)
        np.testing.assert_allclose(model.transform(x), fitted.transform(x), rtol=1e-9, atol=1e-9)
        assert model.scatter_.count == fitted.scatter_.count == 300
    with pytest.raises(ValueError, match="feature_shape"):
        fastnorm.preprocessing.PCA.from_scatter(whole, feature_shape=(2, 2))


def test_standardizer_from_moments():
    x = _data((6, 3, 4, 5), np.float32)[0]
    fitted = fastnorm.preprocessing.Standardizer(axis=(0, 2, 3)).fit(x)
    m = fastnorm.merge_moments(fastnorm.moments(x[:2], axis=(0, 2, 3)), fastnorm.moments(x[2:], axis=(0, 2, 3)))
    model = fastnorm.preprocessing.Standardizer.from_moments(m, axis=(0, 2, 3))
    np.testing.assert_allclose(model.transform(x), fitted.transform(x), rtol=1e-6, atol=1e-6)
    assert model.n_samples_seen_ == fitted.n_samples_seen_ == 120


BAD = [
    (lambda: fastnorm.batch_norm_apply(np.ones((4, 3)), (1, 2)), TypeError, "stats: expected Moments"),
    (lambda: fastnorm.batch_norm_apply(np.ones((4, 3)), fastnorm.Moments(np.array(0), np.zeros(3), np.zeros(3))),
     ValueError, "stats: .* count > 0"),
    (lambda: fastnorm.batch_norm_apply(np.ones((4, 3)), fastnorm.batch_norm_stats(np.ones((4, 2)))), ValueError,
     r"stats.mean: expected shape \(3,\)"),
    (lambda: fastnorm.batch_norm_input_grad(np.ones((4, 3)), np.ones((4, 3)), np.zeros(3), np.ones(3), np.zeros(3),
                                            np.zeros(3), 0), ValueError, "count: expected"),
    (lambda: fastnorm.batch_norm_grad_sums(np.ones((4, 3)), np.ones((4, 3)), None), ValueError, "mean: required"),
    (lambda: fastnorm.batch_norm_grad_sums(np.ones((4, 3)), np.ones((4, 3)), np.zeros(3), activation="relu"),
     ValueError, "rstd: required"),
    (lambda: fastnorm.update_running_stats(np.zeros(3), np.ones(3), fastnorm.batch_norm_stats(np.ones((4, 3))),
                                           momentum=None), ValueError, "num_batches_tracked: required"),
    (lambda: fastnorm.merge_scatter(fastnorm.scatter(np.ones((3, 2))), fastnorm.scatter(np.ones((3, 4)))),
     ValueError, "b: scatter of 4 features"),
]


@pytest.mark.parametrize("call,error,message", BAD)
def test_bad_input_names_the_argument(call, error, message):
    with pytest.raises(error, match=message):
        call()
