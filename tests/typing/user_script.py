# pyright: strict
"""A user's script: what `mypy --strict` and `pyright --strict` check against fastnorm's annotations (CI)."""
import numpy as np

import fastnorm
from fastnorm.layers import BatchNorm2d, LayerNorm
from fastnorm.preprocessing import PCA, Standardizer

rng = fastnorm.random.Generator(0)
w: np.ndarray = fastnorm.init.kaiming_normal((64, 32, 3, 3), nonlinearity="relu", rng=rng)
x: np.ndarray = rng.normal((8, 64, 6, 6))
h: np.ndarray = fastnorm.gelu(x, approximate="tanh", num_threads=2)
dh: np.ndarray = fastnorm.gelu_backward(np.ones_like(h), x, approximate="tanh")
dx, dalpha = fastnorm.prelu_backward(dh, x, np.full(64, 0.1, np.float32))
y, mean, rstd = fastnorm.batch_norm(x, gamma=np.ones(64), return_stats=True)
grads = fastnorm.batch_norm_backward(np.ones_like(x), x, mean, rstd, np.ones(64))
m: fastnorm.Moments = fastnorm.moments(x, axis=(0, 2, 3))
total: fastnorm.Moments = fastnorm.merge_moments(m, m)
bn = BatchNorm2d(64, eps=1e-5, momentum=0.1)
out: np.ndarray = bn(x)
back: np.ndarray = bn.backward(np.ones_like(out))
ln = LayerNorm(6, elementwise_affine=True)
z: np.ndarray = ln(x)
features = Standardizer().fit(x.reshape(8, -1)).transform(x.reshape(8, -1))
pca = PCA(4).fit(x.reshape(8, -1))
fastnorm.set_num_threads(2)
threads: int = fastnorm.get_num_threads()


def tanh_grad(d: np.ndarray, v: np.ndarray) -> np.ndarray:
    return fastnorm.tanh_backward(d, v)


report: fastnorm.GradcheckReport = fastnorm.gradcheck(fastnorm.tanh, x[:1, :1, :2, :2], tanh_grad)
print(h.shape, dx.shape, dalpha.shape, grads[0].shape, total.count, back.shape, z.shape, pca.n_components_,
      threads, report.ok, features.shape)
