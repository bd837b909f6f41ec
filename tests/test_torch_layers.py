"""The layers against the PyTorch modules they mirror: the same outputs, input and parameter gradients and
running statistics over several training steps and in eval mode, and each other's state dicts."""
import numpy as np
import pytest

import fastnorm.layers as L

torch = pytest.importorskip("torch", reason="PyTorch is optional; this compares with it when installed")

# name: (fastnorm layer, PyTorch module, input shape) built from the same constructor arguments
PAIRS = {
    "BatchNorm1d 2-d": (lambda: L.BatchNorm1d(4, 1e-5, 0.3), lambda: torch.nn.BatchNorm1d(4, 1e-5, 0.3), (10, 4)),
    "BatchNorm1d 3-d": (lambda: L.BatchNorm1d(4), lambda: torch.nn.BatchNorm1d(4), (6, 4, 5)),
    "BatchNorm2d": (lambda: L.BatchNorm2d(3, momentum=None), lambda: torch.nn.BatchNorm2d(3, momentum=None),
                    (4, 3, 5, 6)),
    "BatchNorm3d no affine": (lambda: L.BatchNorm3d(2, affine=False), lambda: torch.nn.BatchNorm3d(2, affine=False),
                              (3, 2, 3, 4, 5)),
    "BatchNorm2d untracked": (lambda: L.BatchNorm2d(3, track_running_stats=False),
                              lambda: torch.nn.BatchNorm2d(3, track_running_stats=False), (4, 3, 5, 6)),
    "LayerNorm": (lambda: L.LayerNorm((5, 6)), lambda: torch.nn.LayerNorm((5, 6)), (4, 5, 6)),
    "LayerNorm no bias": (lambda: L.LayerNorm(6, bias=False), lambda: torch.nn.LayerNorm(6, bias=False), (4, 6)),
    "LayerNorm no affine": (lambda: L.LayerNorm(6, elementwise_affine=False),
                            lambda: torch.nn.LayerNorm(6, elementwise_affine=False), (4, 6)),
    "RMSNorm": (lambda: L.RMSNorm(6, 1e-6), lambda: torch.nn.RMSNorm(6, 1e-6), (4, 3, 6)),
    "GroupNorm": (lambda: L.GroupNorm(2, 6), lambda: torch.nn.GroupNorm(2, 6), (3, 6, 4, 5)),
    "InstanceNorm1d": (lambda: L.InstanceNorm1d(4, affine=True), lambda: torch.nn.InstanceNorm1d(4, affine=True),
                       (3, 4, 7)),
    "InstanceNorm1d unbatched": (lambda: L.InstanceNorm1d(4), lambda: torch.nn.InstanceNorm1d(4), (4, 7)),
    "InstanceNorm2d tracked": (lambda: L.InstanceNorm2d(3, track_running_stats=True, affine=True),
                               lambda: torch.nn.InstanceNorm2d(3, track_running_stats=True, affine=True),
                               (2, 3, 5, 6)),
    "InstanceNorm3d": (lambda: L.InstanceNorm3d(2), lambda: torch.nn.InstanceNorm3d(2), (2, 2, 3, 4, 5)),
    "PReLU": (lambda: L.PReLU(4, 0.1), lambda: torch.nn.PReLU(4, 0.1), (5, 4, 3)),
    "PReLU shared": (lambda: L.PReLU(), lambda: torch.nn.PReLU(), (5, 4)),
}


def _close(ours, theirs, what, tol=2e-5):
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    np.testing.assert_allclose(np.asarray(ours, np.float64), theirs.astype(np.float64), rtol=tol, atol=tol,
                               err_msg=what)


def _randomize(ours, theirs, rng):
    """Non-trivial parameters, the same on both sides (through PyTorch's state dict: our loader under test)."""
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, tuple(p.shape)).astype(np.float32)))
    ours.load_state_dict(theirs.state_dict())


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_same_as_pytorch_over_training_steps_and_in_eval(name):
    make_ours, make_theirs, shape = PAIRS[name]
    ours, theirs = make_ours(), make_theirs()
    rng = np.random.default_rng(7)
    _randomize(ours, theirs, rng)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    for step in range(3):
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        tx = torch.from_numpy(x).requires_grad_()
        ty = theirs(tx)
        ty.backward(torch.from_numpy(dy))
        _close(ours(x), ty, f"{name}: output at step {step}")
        _close(ours.backward(dy), tx.grad, f"{name}: input gradient at step {step}")
        for pname, p in theirs.named_parameters():
            _close(ours.grads[pname], p.grad, f"{name}: {pname} gradient at step {step}", tol=1e-4)
            p.grad = None
        for bname, b in theirs.named_buffers():
            _close(ours.state_dict()[bname], b, f"{name}: {bname} after step {step}")
    ours.eval()
    theirs.eval()
    x = rng.standard_normal(shape).astype(np.float32)
    with torch.no_grad():
        _close(ours(x), theirs(torch.from_numpy(x)), f"{name}: eval output")


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_state_dicts_load_both_ways(name):
    make_ours, make_theirs, shape = PAIRS[name]
    ours, theirs = make_ours(), make_theirs()
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32)
    ours(x)  # running statistics that differ from the initial ones
    ours.grads = {}
    for key, value in ours.state_dict().items():
        if value.dtype.kind == "f":
            ours.state_dict()  # copies: changing them changes nothing
            getattr(ours, key)[...] = rng.uniform(0.5, 1.5, value.shape)
    theirs.load_state_dict(ours.torch_state_dict())
    back = make_ours()
    back.load_state_dict(theirs.state_dict())  # tensors
    for key, value in ours.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value)
        np.testing.assert_array_equal(theirs.state_dict()[key].numpy(), value)
    again = make_ours()
    again.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})  # arrays
    ours.eval(), theirs.eval(), again.eval()
    with torch.no_grad():
        _close(again(x), theirs(torch.from_numpy(x)), f"{name}: after loading")


def test_an_empty_training_batch_is_handled_as_pytorch():
    ours, theirs = L.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    ours.running_mean[...] = 2
    theirs.running_mean.fill_(2)
    y = ours(np.zeros((0, 3), np.float32))
    ty = theirs(torch.zeros(0, 3))
    assert y.shape == tuple(ty.shape) == (0, 3)
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_array_equal(ours.state_dict()[key], theirs.state_dict()[key].numpy())
    assert ours.backward(np.zeros((0, 3), np.float32)).shape == (0, 3)
    assert not ours.grads["weight"].any()


def test_layers_are_called_like_modules_and_refuse_the_wrong_input():
    x = np.random.default_rng(0).standard_normal((4, 3, 5)).astype(np.float32)
    bn = L.BatchNorm(3)
    np.testing.assert_array_equal(bn(x), L.BatchNorm(3).forward(x))
    with pytest.raises(ValueError, match="num_features=3 channels along axis 1"):
        L.BatchNorm(3)(np.ones((4, 5, 3), np.float32))
    with pytest.raises(ValueError, match="BatchNorm2d expects 4-d"):
        L.BatchNorm2d(3)(x)
    with pytest.raises(ValueError, match="num_features=4 channels"):
        L.InstanceNorm(4)(np.ones((4, 7), np.float32))  # an unbatched (C, L): say InstanceNorm1d
    assert L.InstanceNorm1d(4)(np.random.default_rng(1).standard_normal((4, 7))).shape == (4, 7)
    bn.gamma = bn.gamma * 2  # the lecture's names for weight and bias
    assert (bn.weight == 2).all() and bn.beta is bn.bias
