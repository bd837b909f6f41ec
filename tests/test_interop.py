"""Arrays from other libraries: PyTorch CPU tensors (zero-copy, bfloat16 included), tensors that require grad, and
objects that offer only ``__dlpack__``."""
import numpy as np
import pytest

import fastnorm


class DLPackOnly:
    """An array that offers nothing but the DLPack protocol."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_an_object_with_only_dlpack_is_taken():
    x = np.linspace(-2, 2, 12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(fastnorm.tanh(DLPackOnly(x)), fastnorm.tanh(x))
    np.testing.assert_array_equal(fastnorm.layer_norm(DLPackOnly(x)), fastnorm.layer_norm(x))
    np.testing.assert_array_equal(fastnorm.moments(DLPackOnly(x), axis=0).mean, fastnorm.moments(x, axis=0).mean)


def test_pytorch_tensors_of_every_computed_dtype():
    torch = pytest.importorskip("torch", reason="PyTorch is optional; this compares with it when installed")
    x = np.random.default_rng(0).standard_normal((6, 5)).astype(np.float32)
    for tdtype, ndtype in [(torch.float32, np.float32), (torch.float64, np.float64), (torch.float16, np.float16)]:
        t = torch.from_numpy(x).to(tdtype)
        want = fastnorm.silu(x.astype(ndtype))
        got = fastnorm.silu(t)
        assert isinstance(got, np.ndarray) and got.dtype == ndtype
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(fastnorm.batch_norm(t), fastnorm.batch_norm(x.astype(ndtype)))
    ml_dtypes = pytest.importorskip("ml_dtypes")
    tb = torch.from_numpy(x).to(torch.bfloat16)
    got = fastnorm.gelu(tb)
    assert got.dtype == ml_dtypes.bfloat16
    want = fastnorm.gelu(tb.float().numpy().astype(ml_dtypes.bfloat16))
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))
    strided = torch.from_numpy(x).to(torch.bfloat16)[:, ::2]  # not contiguous: still a view
    np.testing.assert_array_equal(fastnorm.relu(strided).astype(np.float32),
                                  np.maximum(strided.float().numpy(), 0))


def test_a_cpu_tensor_is_read_without_a_copy():
    torch = pytest.importorskip("torch", reason="PyTorch is optional; this compares with it when installed")
    t = torch.linspace(-1, 1, 8)
    arr = fastnorm._array.as_array(t, "x")
    assert np.shares_memory(arr, t.numpy())


def test_a_tensor_that_requires_grad_gets_a_fastnorm_error():
    torch = pytest.importorskip("torch", reason="PyTorch is optional; this compares with it when installed")
    t = torch.ones(3, requires_grad=True)
    with pytest.raises(TypeError, match=r"x: a tensor that requires grad; pass x.detach\(\)"):
        fastnorm.relu(t)
    with pytest.raises(TypeError, match="dy: a tensor that requires grad"):
        fastnorm.relu_backward(t, np.ones(3))
    np.testing.assert_array_equal(fastnorm.relu(t.detach()), [1, 1, 1])
