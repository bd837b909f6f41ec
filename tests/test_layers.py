"""Layer classes: train/eval semantics, gradients through backward, state dicts, repr."""
import numpy as np
import pytest

import fastnorm
from fastnorm.layers import BatchNorm, Maxout, PReLU


def test_batch_norm_layer_train_then_eval(rng):
    layer = BatchNorm(3, momentum=0.5)
    assert layer.training and (layer.gamma == 1).all() and (layer.beta == 0).all()
    x = (rng.standard_normal((16, 3, 4)) * 2 + 1).astype(np.float32)
    y = layer.forward(x)
    np.testing.assert_allclose(y, fastnorm.batch_norm(x), rtol=1e-6, atol=1e-6)
    assert int(layer.num_batches_tracked) == 1
    np.testing.assert_allclose(layer.running_mean, 0.5 * x.astype(np.float64).mean(axis=(0, 2)), rtol=1e-5)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx = layer.backward(dy)
    _, m, r = fastnorm.batch_norm(x, return_stats=True)
    edx, edg, edb = fastnorm.batch_norm_backward(dy, x, m, r, np.ones(3, np.float32))
    np.testing.assert_allclose(dx, edx, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.grads["weight"], edg, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.grads["bias"], edb, rtol=1e-5, atol=1e-5)
    layer.eval()
    rm = layer.running_mean.copy()
    y_eval = layer.forward(x)
    np.testing.assert_array_equal(layer.running_mean, rm)  # eval does not update
    expected = (x - rm.reshape(1, 3, 1)) / np.sqrt(layer.running_var.reshape(1, 3, 1) + 1e-5)
    np.testing.assert_allclose(y_eval, expected, rtol=1e-5, atol=1e-5)
    assert int(layer.num_batches_tracked) == 1
    assert "BatchNorm(3" in repr(layer) and "training=False" in repr(layer)


def test_state_dict_round_trip(rng):
    a = BatchNorm(4)
    a.forward(rng.standard_normal((8, 4)).astype(np.float32))
    state = a.state_dict()
    assert set(state) == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    state["weight"] += 1  # a copy: the layer is not changed through it
    assert (a.gamma == 1).all()
    b = BatchNorm(4)
    b.load_state_dict(a.state_dict())
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(getattr(b, k), v)
    with pytest.raises(ValueError, match="state: missing"):
        b.load_state_dict({"weight": np.ones(4)})
    bad = a.state_dict()
    bad["weight"] = np.ones(5)
    with pytest.raises(ValueError, match=r"state: weight has shape \(5,\), expected \(4,\)"):
        b.load_state_dict(bad)


def test_prelu_and_maxout_layers(rng):
    p = PReLU(3)
    x = rng.standard_normal((5, 3, 2)).astype(np.float32)
    y = p.forward(x)
    np.testing.assert_array_equal(y, fastnorm.prelu(x, p.alpha))
    dy = np.ones_like(x)
    p.backward(dy)
    np.testing.assert_allclose(p.grads["weight"], np.where(x > 0, 0, x).sum(axis=(0, 2)), rtol=1e-5)
    single = PReLU()
    single.forward(x)
    single.backward(dy)
    assert single.grads["weight"].shape == (1,)
    m = Maxout(2)
    z = rng.standard_normal((4, 6))
    np.testing.assert_array_equal(m.forward(z), fastnorm.maxout(z, 2))
    assert m.backward(np.ones((4, 3))).shape == (4, 6)
    assert m.state_dict() == {}


def test_backward_before_forward_and_bad_sizes():
    with pytest.raises(RuntimeError, match="call forward first"):
        BatchNorm(2).backward(np.ones((2, 2)))
    with pytest.raises(ValueError, match="num_features: expected a positive int"):
        BatchNorm(0)


def test_matches_pytorch_module_sequence():
    torch = pytest.importorskip("torch", reason="PyTorch is optional; this compares with it when installed")
    rng = np.random.default_rng(3)
    ours, theirs = BatchNorm(4, momentum=0.3), torch.nn.BatchNorm1d(4, momentum=0.3)
    for step in range(3):
        x = (rng.standard_normal((10, 4)) * (step + 1) + step).astype(np.float32)
        y = ours.forward(x)
        ty = theirs(torch.from_numpy(x))
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-5)
    ours.eval()
    theirs.eval()
    x = rng.standard_normal((5, 4)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(ours.forward(x), theirs(torch.from_numpy(x)).numpy(), rtol=1e-5, atol=1e-5)


def test_layer_norm_and_rms_norm_layers(rng):
    from fastnorm.layers import LayerNorm, RMSNorm
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    ln = LayerNorm((3, 5))
    np.testing.assert_allclose(ln.forward(x), fastnorm.layer_norm(x, axis=(-2, -1)), rtol=1e-6)
    dx = ln.backward(dy)
    _, m, r = fastnorm.layer_norm(x, axis=(-2, -1), return_stats=True)
    edx, edg, edb = fastnorm.layer_norm_backward(dy, x, m, r, np.ones((3, 5), np.float32), axis=(-2, -1))
    np.testing.assert_allclose(dx, edx, rtol=1e-5, atol=1e-6)
    assert ln.grads["weight"].shape == (3, 5)
    np.testing.assert_allclose(ln.grads["bias"], edb, rtol=1e-5, atol=1e-6)
    rn = RMSNorm(5)
    np.testing.assert_allclose(rn.forward(x), fastnorm.rms_norm(x), rtol=1e-6)
    assert rn.backward(dy).shape == x.shape and rn.grads["weight"].shape == (5,)
    assert set(ln.state_dict()) == {"weight", "bias"} and set(rn.state_dict()) == {"weight"}
    assert "LayerNorm((3, 5)" in repr(ln)
    with pytest.raises(ValueError, match="normalized_shape: expected positive sizes"):
        LayerNorm(0)


def test_group_norm_and_instance_norm_layers(rng):
    from fastnorm.layers import GroupNorm, InstanceNorm
    x = rng.standard_normal((3, 6, 4, 4)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    gn = GroupNorm(3, 6)
    np.testing.assert_allclose(gn.forward(x), fastnorm.group_norm(x, 3), rtol=1e-6)
    assert gn.backward(dy).shape == x.shape and gn.grads["weight"].shape == (6,)
    inn = InstanceNorm(6, track_running_stats=True)
    y = inn.forward(x)
    np.testing.assert_allclose(y, fastnorm.instance_norm(x), rtol=1e-6)
    assert inn.backward(dy).shape == x.shape and inn.grads == {}
    assert (inn.running_mean != 0).any()
    inn.eval()
    ye = inn.forward(x)
    expected = (x - inn.running_mean.reshape(1, 6, 1, 1)) / np.sqrt(inn.running_var.reshape(1, 6, 1, 1) + 1e-5)
    np.testing.assert_allclose(ye, expected, rtol=1e-5, atol=1e-5)
    assert inn.backward(dy).shape == x.shape
    assert set(inn.state_dict()) == {"running_mean", "running_var", "num_batches_tracked"}
    with pytest.raises(ValueError, match="num_groups: 4 does not divide the 6 channels"):
        GroupNorm(4, 6)
