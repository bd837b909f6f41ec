"""fastnorm.gradcheck on every backward of the library, and on a wrong gradient (it must fail loudly)."""
import numpy as np
import pytest

import fastnorm
import reference as ref
from helpers import call_backward, call_forward


@pytest.mark.parametrize("name", sorted(ref.ELEMENTWISE))
def test_every_activation_backward(name):
    kw = ref.ELEMENTWISE[name][2]
    x = np.random.default_rng(1).uniform(-3, 3, (3, 7))
    x[np.abs(x) < 0.05] += 0.1  # keep off the kinks at 0 (relu and friends)
    x[np.abs(np.abs(x) - 3) < 0.05] += 0.1  # and at +-3 (hardsigmoid, hardswish)
    fastnorm.gradcheck(lambda x: call_forward(name, x, kw), [x], lambda dy, x: [call_backward(name, dy, x, kw)],
                       tol=1e-5)


def test_prelu_and_maxout():
    rng = np.random.default_rng(2)
    x, alpha = rng.standard_normal((2, 3, 4)) + 0.1, rng.uniform(0.1, 0.3, 3)
    fastnorm.gradcheck(lambda x, a: fastnorm.prelu(x, a), [x, alpha],
                       lambda dy, x, a: list(fastnorm.prelu_backward(dy, x, a)), tol=1e-6)
    fastnorm.gradcheck(lambda x: fastnorm.maxout(x, 2), [rng.standard_normal((2, 6, 3))],
                       lambda dy, x: [fastnorm.maxout_backward(dy, x, 2)], tol=1e-6)


def _norm_case(forward, backward):
    """grads(dy, x, gamma, beta) from a forward with return_stats and its backward."""
    def grads(dy, x, gamma, beta):
        _, mean, rstd = forward(x, gamma, beta, return_stats=True)
        return list(backward(dy, x, mean, rstd, gamma))
    return grads


@pytest.mark.parametrize("kind", ["batch", "layer", "group", "instance"])
def test_normalization_backwards(kind):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6, 3, 2)) * 2 + 1
    C = 6 if kind != "layer" else 2
    gamma, beta = rng.uniform(0.5, 1.5, C), rng.standard_normal(C)
    fwd = {"batch": lambda x, g, b, **k: fastnorm.batch_norm(x, gamma=g, beta=b, **k),
           "layer": fastnorm.layer_norm,
           "group": lambda x, g, b, **k: fastnorm.group_norm(x, 3, g, b, **k),
           "instance": lambda x, g, b, **k: fastnorm.instance_norm(x, gamma=g, beta=b, **k)}[kind]
    bwd = {"batch": fastnorm.batch_norm_backward, "layer": fastnorm.layer_norm_backward,
           "group": lambda dy, x, m, r, g: fastnorm.group_norm_backward(dy, x, m, r, 3, g),
           "instance": fastnorm.instance_norm_backward}[kind]
    fastnorm.gradcheck(lambda x, g, b: fwd(x, g, b), [x, gamma, beta], _norm_case(fwd, bwd), tol=1e-5)


def test_rms_norm_backward():
    rng = np.random.default_rng(4)
    x, gamma = rng.standard_normal((5, 8)), rng.uniform(0.5, 1.5, 8)

    def grads(dy, x, g):
        _, rstd = fastnorm.rms_norm(x, g, return_stats=True)
        return list(fastnorm.rms_norm_backward(dy, x, rstd, g))
    fastnorm.gradcheck(lambda x, g: fastnorm.rms_norm(x, g), [x, gamma], grads, tol=1e-6)


def test_a_wrong_gradient_fails_with_a_report():
    x = np.linspace(-2, 2, 7)
    with pytest.raises(fastnorm.GradcheckError, match="input 0: max relative error"):
        fastnorm.gradcheck(fastnorm.tanh, [x], lambda dy, x: [dy * 1.01 * (1 - np.tanh(x) ** 2)])
    report = fastnorm.gradcheck(fastnorm.tanh, [x], [None], raise_on_failure=False)
    assert report.ok and "not checked" in str(report)


def test_numerical_gradient_matches_a_known_derivative():
    x = np.linspace(-1, 1, 5)
    np.testing.assert_allclose(fastnorm.numerical_gradient(lambda v: v ** 3, [x]), 3 * x ** 2, rtol=1e-8)
