"""fold_batch_norm: the folded layer equals layer + BatchNorm(test mode), for linear, convolution (1-3 kernel
dimensions) and transposed convolution layouts."""
import numpy as np
import pytest

import fastnorm


def linear(x, w, b):
    return x @ w.T + b


def conv(x, w, b):
    """Valid, stride-1 cross-correlation of x (N, Cin, *S) with w (Cout, Cin, *K), any number of dimensions."""
    k = w.shape[2:]
    windows = np.lib.stride_tricks.sliding_window_view(x, k, axis=tuple(range(2, x.ndim)))
    # windows: (N, Cin, *Out, *K) -> contract Cin and K
    nd = len(k)
    letters = "abcdefgh"[:nd]
    out_letters = "pqrs"[:nd]
    y = np.einsum(f"nc{out_letters}{letters},oc{letters}->no{out_letters}", windows, w)
    return y + b.reshape((1, -1) + (1,) * nd)


def conv_transpose(x, w, b):
    """Stride-1 transposed convolution of x (N, Cin, *S) with w (Cin, Cout, *K): scatter each input value."""
    n, cin = x.shape[:2]
    k = w.shape[2:]
    out = np.zeros((n, w.shape[1]) + tuple(s + kk - 1 for s, kk in zip(x.shape[2:], k)))
    for pos in np.ndindex(*x.shape[2:]):
        sl = tuple(slice(p, p + kk) for p, kk in zip(pos, k))
        out[(slice(None), slice(None)) + sl] += np.einsum("nc,co...->no...", x[(slice(None), slice(None)) + pos], w)
    return out + b.reshape((1, -1) + (1,) * len(k))


def bn_eval(y, gamma, beta, mean, var, eps=1e-5):
    shape = (1, -1) + (1,) * (y.ndim - 2)
    return (y - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * gamma.reshape(shape) + beta.reshape(shape)


def bn_params(rng, c):
    return rng.uniform(0.5, 1.5, c), rng.standard_normal(c), rng.standard_normal(c), rng.uniform(0.1, 3, c)


@pytest.mark.parametrize("kind", ["linear", "conv1d", "conv2d", "conv3d", "convT2d", "linear_no_bias"])
def test_folded_layer_equals_layer_then_batch_norm_float32(kind, rng):
    cout, cin = 5, 3
    if kind.startswith("linear"):
        x = rng.standard_normal((7, cin)).astype(np.float32)
        w = rng.standard_normal((cout, cin)).astype(np.float32)
        layer = linear
    elif kind == "convT2d":
        x = rng.standard_normal((2, cin, 4, 5)).astype(np.float32)
        w = rng.standard_normal((cin, cout, 3, 2)).astype(np.float32)
        layer = conv_transpose
    else:
        nd = int(kind[4])
        x = rng.standard_normal((2, cin) + (6,) * nd).astype(np.float32)
        w = rng.standard_normal((cout, cin) + (3,) * nd).astype(np.float32)
        layer = conv
    b = None if kind == "linear_no_bias" else rng.standard_normal(cout).astype(np.float32)
    gamma, beta, mean, var = (p.astype(np.float32) for p in bn_params(rng, cout))
    w0 = w.copy()
    fw, fb = fastnorm.fold_batch_norm(w, b, gamma, beta, mean, var, transposed=kind == "convT2d")
    assert fw.dtype == np.float32 and fb.dtype == np.float32 and fw.shape == w.shape and fb.shape == (cout,)
    np.testing.assert_array_equal(w, w0)
    b_used = np.zeros(cout, np.float32) if b is None else b
    expected = bn_eval(layer(x.astype(np.float64), w.astype(np.float64), b_used.astype(np.float64)),
                       *(p.astype(np.float64) for p in (gamma, beta, mean, var)))
    folded = layer(x.astype(np.float64), fw.astype(np.float64), fb.astype(np.float64))
    np.testing.assert_allclose(folded, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_matches_batch_norm_in_test_mode(rng):
    x = rng.standard_normal((6, 4))
    w, b = rng.standard_normal((3, 4)), rng.standard_normal(3)
    gamma, beta, mean, var = bn_params(rng, 3)
    fw, fb = fastnorm.fold_batch_norm(w, b, gamma, beta, mean, var, eps=1e-3)
    expected = fastnorm.batch_norm(linear(x, w, b), gamma=gamma, beta=beta, training=False, running_mean=mean.copy(),
                                   running_var=var.copy(), eps=1e-3)
    np.testing.assert_allclose(linear(x, fw, fb), expected, rtol=1e-12, atol=1e-12)


def test_bad_input(rng):
    w = rng.standard_normal((3, 4))
    good = dict(gamma=np.ones(3), beta=np.zeros(3), running_mean=np.zeros(3), running_var=np.ones(3))
    with pytest.raises(ValueError, match=r"gamma: expected shape \(3,\)"):
        fastnorm.fold_batch_norm(w, None, **{**good, "gamma": np.ones(4)})
    with pytest.raises(ValueError, match=r"running_var: expected shape \(4,\) \(one value per output channel of "
                                         r"weight axis 1\)"):
        fastnorm.fold_batch_norm(w, None, None, None, np.zeros(4), np.ones(3), transposed=True)
    with pytest.raises(ValueError, match="weight: expected"):
        fastnorm.fold_batch_norm(np.ones(3), None, **good)
    with pytest.raises(ValueError, match="eps: expected a finite number > 0"):
        fastnorm.fold_batch_norm(w, None, **good, eps=0)
    with pytest.raises(TypeError, match="weight: unsupported dtype complex128"):
        fastnorm.fold_batch_norm(w.astype(complex), None, **good)
    with pytest.raises(ValueError, match="running_mean: folding needs"):
        fastnorm.fold_batch_norm(w, None, np.ones(3), np.zeros(3), None, np.ones(3))
