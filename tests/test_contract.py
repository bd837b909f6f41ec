"""The NumPy contract (fastnorm._array) and clear errors for bad input, checked on every public function."""
import numpy as np
import pytest

import fastnorm
import reference as ref
from helpers import call_backward, call_forward

NAMES = sorted(ref.ELEMENTWISE)


@pytest.mark.parametrize("name", NAMES)
def test_dtypes_in_and_out(name):
    kw = ref.ELEMENTWISE[name][2]
    values = [-2.0, -0.5, 0.0, 0.5, 2.0]
    for dtype, result in [(np.float32, np.float32), (np.float64, np.float64), (np.float16, np.float16),
                          (np.int8, np.float64), (np.int64, np.float64), (np.uint16, np.float64),
                          (np.bool_, np.float64)]:
        x = np.array(values).astype(dtype)
        y = call_forward(name, x, kw)
        assert y.dtype == result, (dtype, y.dtype)
        np.testing.assert_allclose(y, ref.forward(name, x.astype(np.float64), **kw), rtol=2e-3, atol=1e-3)
    assert call_forward(name, values, kw).dtype == np.float64  # a list is array_like


def test_bfloat16_round_trips_when_ml_dtypes_is_installed():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.array([-1.0, 0.5, 3.0], dtype=ml_dtypes.bfloat16)
    y = fastnorm.sigmoid(x)
    assert y.dtype == ml_dtypes.bfloat16
    np.testing.assert_allclose(y.astype(np.float64), ref.sigmoid(x.astype(np.float64)), rtol=1e-2)


@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.array([1 + 2j]), np.array([None, 1.0], dtype=object)])
def test_unsupported_dtypes_raise_type_error_naming_the_dtype(bad):
    with pytest.raises(TypeError, match=rf"x: unsupported dtype {bad.dtype}"):
        fastnorm.relu(bad)
    with pytest.raises(TypeError, match=r"dy: unsupported dtype"):
        fastnorm.relu_backward(bad, np.ones(bad.shape))
    with pytest.raises(TypeError, match=r"x: unsupported dtype"):
        fastnorm.relu_backward(np.ones(bad.shape), bad)


@pytest.mark.parametrize("name", NAMES)
def test_zero_d_and_empty(name):
    kw = ref.ELEMENTWISE[name][2]
    y = call_forward(name, np.float32(0.75), kw)
    assert isinstance(y, np.ndarray) and y.shape == () and y.dtype == np.float32
    np.testing.assert_allclose(y, ref.forward(name, 0.75, **kw), rtol=1e-6)
    for shape in [(0,), (3, 0, 2)]:
        e = np.empty(shape, dtype=np.float64)
        assert call_forward(name, e, kw).shape == shape
        assert call_backward(name, e, e, kw).shape == shape


@pytest.mark.parametrize("name", NAMES)
def test_inputs_are_never_modified(name, rng):
    kw = ref.ELEMENTWISE[name][2]
    x = rng.standard_normal((4, 6)).astype(np.float32)
    dy = rng.standard_normal((4, 6)).astype(np.float32)
    x0, dy0 = x.copy(), dy.copy()
    call_forward(name, x, kw)
    call_backward(name, dy, x, kw)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dy, dy0)


def test_out_is_written_and_returned(rng):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    out = np.empty_like(x)
    assert fastnorm.tanh(x, out=out) is out
    np.testing.assert_allclose(out, np.tanh(x), rtol=1e-6)
    out64 = np.empty((3, 5))  # float32 result into a float64 out: same_kind allows it
    assert fastnorm.tanh(x, out=out64) is out64
    np.testing.assert_allclose(out64, np.tanh(x.astype(np.float64)), rtol=1e-6)
    strided = np.empty((3, 10), dtype=np.float32)[:, ::2]  # non-contiguous out
    fastnorm.tanh(x, out=strided)
    np.testing.assert_allclose(strided, np.tanh(x), rtol=1e-6)
    dx = np.empty_like(x)
    assert fastnorm.tanh_backward(np.ones_like(x), x, out=dx) is dx


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_out_may_be_the_input_itself(dtype, rng):
    x = rng.standard_normal(1000).astype(dtype)
    expected = fastnorm.silu(x)
    assert fastnorm.silu(x, out=x) is x
    np.testing.assert_array_equal(x, expected)


def test_out_partly_overlapping_the_input_gives_the_right_answer():
    base = np.linspace(-3, 3, 101)
    x = base[:-1]
    expected = fastnorm.sigmoid(x.copy())
    fastnorm.sigmoid(x, out=base[1:])  # out is x shifted by one element
    np.testing.assert_array_equal(base[1:], expected)


def test_bad_out_raises_saying_which():
    x = np.ones((2, 3), dtype=np.float64)
    with pytest.raises(ValueError, match=r"out: expected shape \(2, 3\), got \(3, 2\)"):
        fastnorm.relu(x, out=np.empty((3, 2)))
    with pytest.raises(TypeError, match="out: cannot cast the result's dtype float64 to out's dtype int64"):
        fastnorm.relu(x, out=np.empty((2, 3), dtype=np.int64))
    down = np.empty((2, 3), dtype=np.float32)  # float64 -> float32 is same_kind, as for NumPy's ufuncs
    assert fastnorm.relu(x, out=down) is down
    ro = np.empty((2, 3))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out: array is read-only"):
        fastnorm.relu(x, out=ro)
    with pytest.raises(TypeError, match="out: expected a numpy.ndarray, got list"):
        fastnorm.relu(x, out=[0.0] * 6)
    with pytest.raises(ValueError, match="out: expected shape"):
        fastnorm.relu_backward(x, x, out=np.empty(6))


def test_shape_mismatch_between_dy_and_x():
    with pytest.raises(ValueError, match=r"x: shape \(3,\) differs from dy's shape \(2,\)"):
        fastnorm.tanh_backward(np.ones(2), np.ones(3))


def test_bad_parameters():
    x = np.ones(4)
    with pytest.raises(ValueError, match="approximate: expected 'none' or 'tanh'"):
        fastnorm.gelu(x, approximate="erf")
    with pytest.raises(ValueError, match="min_val: 2.0 is greater than max_val 1.0"):
        fastnorm.hardtanh(x, 2.0, 1.0)
    with pytest.raises(ValueError, match="beta: expected a positive number"):
        fastnorm.softplus(x, beta=0)
    with pytest.raises(TypeError, match="negative_slope: expected a real number"):
        fastnorm.leaky_relu(x, "steep")
    with pytest.raises(ValueError, match="alpha: expected a finite number"):
        fastnorm.elu(x, alpha=np.nan)


def test_prelu_bad_alpha_and_axis():
    x = np.ones((2, 3, 4))
    with pytest.raises(ValueError, match="alpha: has 4 values but x has 3 channels along axis 1"):
        fastnorm.prelu(x, np.ones(4))
    with pytest.raises(ValueError, match="axis: 3 is out of range for an array of 3 dimensions"):
        fastnorm.prelu(x, np.ones(4), axis=3)
    with pytest.raises(ValueError, match="alpha: expected a scalar or a 1-d array"):
        fastnorm.prelu(x, np.ones((3, 1)))
    with pytest.raises(ValueError, match="alpha: has 2 values"):
        fastnorm.prelu_backward(x, x, np.ones(2))


def test_maxout_bad_pieces_and_axis():
    x = np.ones((2, 6))
    with pytest.raises(ValueError, match="pieces: axis 1 has length 6, not a multiple of pieces=4"):
        fastnorm.maxout(x, 4)
    with pytest.raises(ValueError, match="pieces: expected a positive int"):
        fastnorm.maxout(x, 0)
    with pytest.raises(ValueError, match="axis: -3 is out of range"):
        fastnorm.maxout(x, 2, axis=-3)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 3\)"):
        fastnorm.maxout_backward(np.ones((2, 6)), x, 2)


def test_bindings_are_strict():
    from fastnorm import _C
    op = _C.activation_names().index("relu")
    with pytest.raises(TypeError, match="dtype differs"):
        _C.activation_forward(op, np.ones(3, np.float32), np.ones(3, np.float64), 0, 0, 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.activation_forward(op, np.ones(6)[::2], np.ones(3), 0, 0, 1)
    with pytest.raises(TypeError, match="float32 or float64"):
        _C.activation_forward(op, np.ones(3, np.int32), np.ones(3, np.int32), 0, 0, 1)
    with pytest.raises(TypeError, match="float32 or float64"):
        _C.bn_apply(np.ones(3, np.int16), np.ones(3, np.int16), 1, 3, 1, np.zeros(3), np.ones(3), np.zeros(3), 1)
    with pytest.raises(TypeError, match="dtype differs"):  # half storage, but not mixed with float32
        _C.bn_apply(np.ones(3, np.float16), np.ones(3, np.float32), 1, 3, 1, np.zeros(3), np.ones(3), np.zeros(3), 1)
    with pytest.raises(ValueError, match="expected 3 elements"):
        _C.activation_forward(op, np.ones(3), np.ones(4), 0, 0, 1)


def test_info_reports_the_build():
    i = fastnorm.info()
    assert i["version"] == fastnorm.__version__
    assert i["isa"] in i["supported_isas"]
    for key in ["openmp", "num_threads", "compiler", "flags"]:
        assert key in i


def test_the_names_python_passes_are_the_kernels_tables():
    """Post-ops and distributions cross into C++ by name, from one table per enum (enum_table.h): the Python names
    are the kernels', and a name outside a table is refused naming the argument."""
    from fastnorm import _C, _validate, random
    assert ("none",) + _validate.POST_OPS == tuple(_C.post_op_names())
    assert (random._UNIFORM, random._NORMAL, random._TRUNCATED) == tuple(_C.distribution_names())
    assert len(_C.activation_names()) == len(set(_C.activation_names())) >= 14
    x = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="activation: unknown value 'tanh'"):
        _C.ln_forward(x, np.empty_like(x), 2, 4, 1e-5, True, None, None, np.empty(2), np.empty(2), 1, "tanh", 0.0)
    with pytest.raises(ValueError, match="distribution: unknown value 'cauchy'"):
        _C.sample("cauchy", 1, 0, np.empty(4, np.float32), _C.SampleParams(), 1, False)
