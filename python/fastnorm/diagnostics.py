"""The lecture's activation-statistics experiment as a tool: per-layer statistics of activations and gradients.

"Forward pass for a 6-layer net with hidden size 4096": with weights of std 0.01 all activations tend to zero for
deeper layers; with std 0.05 they saturate (tanh); Xavier keeps them nicely scaled, until tanh is swapped for ReLU
and He's sqrt(2 / Din) is needed; batch norm makes any of them well scaled.

- :func:`activation_stats` runs that experiment on a fully-connected net built from fastnorm's initializers,
  activations and normalizations (NumPy's matmul for the linear layers), forward and optionally backward.
- :class:`Recorder` computes the same statistics for any network: call it with each layer's output (and, for the
  backward pass, each layer's gradient).
- Both return an :class:`ActivationStats`: per-layer :class:`LayerStats`, a text table, a pandas DataFrame.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np
from typing import Any
from numpy.typing import ArrayLike

import fastnorm
from fastnorm import init as _init
from fastnorm._docs import documented
from fastnorm.random import Generator
from fastnorm.statistics import moments

__all__ = ["TensorStats", "LayerStats", "ActivationStats", "Recorder", "activation_stats", "ACTIVATIONS", "INITS"]

# Activations of the built-in net: fastnorm's elementwise activations without parameters, and "linear".
ACTIVATIONS = ("tanh", "sigmoid", "relu", "leaky_relu", "elu", "selu", "gelu", "silu", "softplus", "mish",
               "hardtanh", "hardsigmoid", "hardswish", "linear")

# Weight initializations: "small" is the lecture's std * randn (std=0.01 unless given); the others are
# fastnorm.init's functions of the same name, for a weight of shape (Din, Dout).
INITS = ("small", "normal", "uniform", "xavier_normal", "xavier_uniform", "kaiming_normal", "kaiming_uniform",
         "lecun_normal", "lecun_uniform", "orthogonal", "trunc_normal")

NORMS = (None, "batch", "layer")

# Where a bounded activation saturates (its local gradient is near zero), as the lecture describes it.
_SATURATION = {
    "tanh": lambda h: np.abs(h) > 0.99,
    "sigmoid": lambda h: (h < 0.01) | (h > 0.99),
    "hardtanh": lambda h: np.abs(h) >= 1.0,
    "hardsigmoid": lambda h: (h <= 0.0) | (h >= 1.0),
}
# Activations whose output range is fixed: histograms use it, so layers are comparable at a glance.
_RANGES = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0), "hardtanh": (-1.0, 1.0), "hardsigmoid": (0.0, 1.0)}
# Activations with a region of exactly zero output and zero gradient: a unit that is there for every example of
# the batch is dead.
_CAN_DIE = ("relu",)


@dataclass
class TensorStats:
    """Statistics of one array (float64): mean, std, min, max, the fraction of exact zeros, of saturated values
    (None when the activation does not saturate) and of dead units (units zero for every example of the batch,
    axis 0; None when the activation cannot die), and a histogram (``counts`` over ``edges``)."""
    mean: float
    std: float
    min: float
    max: float
    zero: float
    saturated: Optional[float]
    dead: Optional[float]
    counts: np.ndarray = field(repr=False)
    edges: np.ndarray = field(repr=False)


@dataclass
class LayerStats:
    """One layer: its activations (the nonlinearity's output), optionally its pre-activations (the
    nonlinearity's input), the gradient of the loss with respect to its activations, and the norm of the gradient
    of its weight."""
    name: str
    activations: Optional[TensorStats] = None
    preactivations: Optional[TensorStats] = None
    gradients: Optional[TensorStats] = None
    weight_grad_norm: Optional[float] = None


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


@dataclass
class ActivationStats:
    """Per-layer statistics (``layers``) and how they were made (``config``)."""
    layers: List[LayerStats]
    config: Dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, i: int) -> LayerStats:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def rows(self) -> List[Any]:
        """One flat dict per layer: the table's and the DataFrame's rows."""
        rows = []
        for layer in self.layers:
            row = {"layer": layer.name}
            for prefix, s in (("act", layer.activations), ("pre", layer.preactivations),
                              ("grad", layer.gradients)):
                if s is not None:
                    row.update({f"{prefix}_mean": s.mean, f"{prefix}_std": s.std})
                    if prefix == "act":
                        row.update({"saturated": s.saturated, "dead": s.dead, "zero": s.zero})
            if layer.weight_grad_norm is not None:
                row["dW_norm"] = layer.weight_grad_norm
            rows.append(row)
        return rows

    def table(self) -> str:
        """A compact text table, one line per layer."""
        rows = self.rows()
        columns = [("layer", "<8", "s"), ("act_mean", ">10", ".4f"), ("act_std", ">10", ".4g"),
                   ("saturated", ">10", ".1%"), ("dead", ">8", ".1%"), ("zero", ">8", ".1%"),
                   ("pre_std", ">10", ".4g"), ("grad_std", ">10", ".3g"), ("dW_norm", ">10", ".3g")]
        columns = [c for c in columns if any(c[0] in r for r in rows)]
        head = "".join(f"{name:{align}}" for name, align, _ in columns)
        lines = [head, "-" * len(head)]
        for r in rows:
            lines.append("".join(f"{_fmt(r.get(name), spec):{align}}" for name, align, spec in columns))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    @documented({}, returns=("matplotlib.figure.Figure", "The figure."),
                path=("str or path-like, optional", "Where to save the figure."),
                what=("{'activations', 'preactivations', 'gradients'}, default 'activations'", "Which statistics."),
                title=("str, optional", "The figure's title."))
    def plot(self, path: Any = None, *, what: str = "activations", title: Optional[str] = None) -> Any:
        """A row of per-layer histograms, as in the lecture (matplotlib must be installed)."""
        _check_choice(what, ("activations", "preactivations", "gradients"), "what")
        try:
            import matplotlib
            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("plot needs matplotlib: pip install 'fastnorm[plot]'") from None
        layers = [layer for layer in self.layers if getattr(layer, what) is not None]
        if not layers:
            raise ValueError(f"what: no layer has {what} statistics")
        # one x axis for the row, so that shrinking or growing activations show as such (as in the lecture)
        fig, axes = plt.subplots(1, len(layers), figsize=(2.2 * len(layers), 2.4), squeeze=False, sharex=True)
        for ax, layer in zip(axes[0], layers):
            s = getattr(layer, what)
            ax.stairs(s.counts, s.edges, fill=True, color="tab:blue")
            label = f"{layer.name}\nmean {s.mean:+.2f}  std {s.std:.2g}"
            if s.zero > 0.05 and len(s.counts) > 1:
                # a spike of exact zeros (ReLU) would flatten the rest: clip it and say how tall it is
                ax.set_ylim(0, 1.2 * max(1, np.sort(s.counts)[-2]))
                label += f"\n{s.zero:.0%} zeros (clipped)"
            ax.set_title(label, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_yticks([])
        fig.suptitle(title or self.describe(), fontsize=9)
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=80)
        plt.close(fig)
        return fig

    def describe(self) -> str:
        """One line naming the configuration."""
        c = self.config
        if not c:
            return "activation statistics"
        init = c.get("init")
        if init in ("small", "normal", "trunc_normal"):
            init = f"std {c.get('std') if c.get('std') is not None else (0.01 if init == 'small' else 1.0)}"
        norm = {"batch": ", batch norm", "layer": ", layer norm"}.get(c.get("norm"), "")
        return (f"{c.get('activation')}, {init}{norm}: {c.get('depth')} layers of {c.get('width')}, "
                f"batch {c.get('batch_size')}")

    def to_dataframe(self) -> Any:
        """The rows as a pandas DataFrame (pandas must be installed)."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("to_dataframe needs pandas: pip install pandas (or use .table() / .rows())") from None
        return pd.DataFrame(self.rows()).set_index("layer")


def tensor_stats(x: ArrayLike, *, activation: Optional[str] = None, bins: int = 50, range: Any = None,
                 num_threads: Optional[int] = None) -> TensorStats:
    """The statistics of one array; ``activation`` (a name) says how to count saturated and dead units, and fixes
    the histogram's range for bounded activations unless ``range`` is given."""
    x = np.asarray(x)
    if x.size == 0:
        raise ValueError("x: statistics of an empty array")
    m = moments(x, num_threads=num_threads)
    std = math.sqrt(float(m.var()))
    lo, hi = float(x.min()), float(x.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("x: contains NaN or infinity")
    rng = range if range is not None else _RANGES.get(activation, (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5))
    counts, edges = np.histogram(x, bins=bins, range=rng)
    sat = _SATURATION.get(activation)
    dead = None
    if activation in _CAN_DIE:
        dead = float(np.all(x.reshape(x.shape[0], -1) <= 0, axis=0).mean()) if x.ndim >= 2 else None
    return TensorStats(mean=float(m.mean), std=std, min=lo, max=hi, zero=float(np.count_nonzero(x == 0)) / x.size,
                       saturated=None if sat is None else float(np.mean(sat(x))), dead=dead, counts=counts,
                       edges=edges)


@documented({}, activation=("str, optional", "The activation the layers apply, for the saturation fraction "
                                             "(tanh, sigmoid saturate; None: not measured)."),
            bins=("int, default 50", "Histogram bins."),
            range=("tuple of float, optional", "The histograms' range (default: each layer's own min and max)."),
            num_threads=("int, optional", "Threads for the statistics; they do not depend on it."))
class Recorder:
    """Records per-layer statistics of any network: call :meth:`record` with each layer's output during the
    forward pass and :meth:`record_gradient` with the gradient of the loss with respect to it during the
    backward pass; :meth:`result` returns an :class:`ActivationStats`.  Layers are kept in the order first
    recorded; recording a name again replaces that part of its statistics.

    Example::

        rec = fastnorm.diagnostics.Recorder(activation="relu")
        h = x
        for i, w in enumerate(weights):
            h = fastnorm.relu(h @ w)
            rec.record(f"fc{i}", h)
        print(rec.result())
    """
    activation: Optional[str]
    bins: int
    range: Any
    num_threads: Optional[int]

    def __init__(self, *, activation: Optional[str] = None, bins: int = 50, range: Any = None,
                 num_threads: Optional[int] = None) -> None:
        if not isinstance(bins, (int, np.integer)) or bins < 1:
            raise ValueError(f"bins: expected an integer >= 1, got {bins!r}")
        self.activation, self.bins, self.range, self.num_threads = activation, int(bins), range, num_threads
        self._layers: dict = {}

    def _layer(self, name: str) -> LayerStats:
        if name not in self._layers:
            self._layers[name] = LayerStats(str(name))
        return self._layers[name]

    def _stats(self, x, activation, range_):
        return tensor_stats(x, activation=activation, bins=self.bins, range=range_, num_threads=self.num_threads)

    @documented({}, name=("str", "The layer's name."), activations=("array_like", "The layer's output."),
                preactivations=("array_like, optional", "Its nonlinearity's input."),
                activation=("str, optional", "The layer's activation, when it differs from the recorder's."))
    def record(self, name: str, activations: Any, *, preactivations: Any = None,
               activation: Optional[str] = None) -> None:
        """Statistics of a layer's output (and of its nonlinearity's input, when given)."""
        act = activation if activation is not None else self.activation
        layer = self._layer(name)
        layer.activations = self._stats(activations, act, self.range)
        if preactivations is not None:
            layer.preactivations = self._stats(preactivations, None, None)

    @documented({}, name=("str", "The layer's name."),
                gradient=("array_like", "dL/d(the layer's output)."),
                weight_gradient=("array_like, optional", "dL/dW, for its Frobenius norm."))
    def record_gradient(self, name: str, gradient: Any, *, weight_gradient: Any = None) -> None:
        """Statistics of dL/d(the layer's output), and the Frobenius norm of dL/dW when given."""
        layer = self._layer(name)
        layer.gradients = self._stats(gradient, None, None)
        if weight_gradient is not None:
            layer.weight_grad_norm = float(np.linalg.norm(np.asarray(weight_gradient, dtype=np.float64)))

    def result(self, config: Optional[Dict[str, Any]] = None) -> ActivationStats:
        return ActivationStats(list(self._layers.values()), dict(config or {}))


def _check_choice(value, valid, name):
    if value not in valid:
        raise ValueError(f"{name}: unknown {value!r}; valid: {', '.join(repr(v) for v in valid)}")


def _weight(init: str, shape: tuple, std: Optional[float], rng: Generator) -> np.ndarray:
    """A (Din, Dout) weight: h @ W, as in the lecture's ``W = std * np.random.randn(Din, Dout)``."""
    if init == "small":
        return _init.normal(shape, std=0.01 if std is None else std, rng=rng)
    if init == "normal":
        return _init.normal(shape, std=1.0 if std is None else std, rng=rng)
    if init in ("uniform", "orthogonal"):
        return getattr(_init, init)(shape, rng=rng)
    if init == "trunc_normal":
        s = 1.0 if std is None else std
        return _init.trunc_normal(shape, std=s, a=-2 * s, b=2 * s, rng=rng)
    if init.startswith("kaiming"):
        return getattr(_init, init)(shape, nonlinearity="relu", layout="in_out", rng=rng)
    return getattr(_init, init)(shape, layout="in_out", rng=rng)


def activation_stats(*, depth: int = 6, width: int = 4096, batch_size: int = 64, activation: str = "tanh",
                     init: str = "xavier_normal", std: Optional[float] = None, norm: Optional[str] = None,
                     backward: bool = False, seed: int = 0, bins: int = 50, num_threads: Optional[int] = None,
                     progress: Any = None) -> ActivationStats:
    """The lecture's experiment: x ~ N(0, 1) of shape (batch_size, width) through ``depth`` layers of
    ``h = activation(norm(h @ W))``, W of shape (width, width) from ``init``; statistics per layer.

    Parameters
    ----------
    depth, width, batch_size : int
        Layers, units per layer, examples.
    activation : str
        One of :data:`ACTIVATIONS`.
    init : str
        One of :data:`INITS`: ``"small"`` is the lecture's ``std * randn`` (std 0.01 unless ``std`` is given);
        ``"xavier_normal"`` is std 1/sqrt(Din) (Glorot & Bengio 2010); ``"kaiming_normal"`` is sqrt(2/Din) (He et
        al. 2015); the rest are :mod:`fastnorm.init`'s.
    std : float, optional
        The standard deviation for ``"small"``, ``"normal"`` and ``"trunc_normal"``.
    norm : None, "batch" or "layer"
        Normalization after each linear layer, before the nonlinearity (Ioffe & Szegedy 2015), without learned
        scale and shift.
    backward : bool
        Also backpropagate a standard-normal upstream gradient from the last layer, recording dL/dh per layer and
        the norm of dL/dW.
    seed : int
        Seeds the input, the weights and the upstream gradient (fastnorm's Philox generator).
    progress : callable, optional
        Called with a short message before each layer.
    bins : int, default 50
        Histogram bins per layer.
    num_threads : int, optional
        Threads for the kernels and statistics; the results do not depend on it.

    Returns
    -------
    ActivationStats
        Per layer (``"layer1"`` ...): ``activations`` (mean, std, saturated and dead fractions, histogram),
        ``preactivations`` (the nonlinearity's input: with batch norm its std is 1), with ``backward``
        ``gradients`` and ``weight_grad_norm``.
    """
    for name, value in (("depth", depth), ("width", width), ("batch_size", batch_size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    _check_choice(activation, ACTIVATIONS, "activation")
    _check_choice(init, INITS, "init")
    _check_choice(norm, NORMS, "norm")
    if norm == "batch" and batch_size < 2:
        raise ValueError("batch_size: batch norm needs at least 2 examples")
    if std is not None and not std > 0:
        raise ValueError(f"std: expected > 0, got {std}")
    rng = Generator(seed)
    say = progress or (lambda message: None)
    act_fwd = None if activation == "linear" else getattr(fastnorm, activation)
    act_bwd = None if activation == "linear" else getattr(fastnorm, activation + "_backward")
    threads = {"num_threads": num_threads}

    rec = Recorder(activation=activation, bins=bins, num_threads=num_threads)
    h = rng.standard_normal((batch_size, width))
    saved = []  # per layer: input, pre-norm z, norm statistics, nonlinearity input
    weights = []
    for layer in range(1, depth + 1):
        say(f"layer {layer}/{depth}: forward")
        w = _weight(init, (width, width), std, rng)
        z = h @ w
        stats = None
        if norm == "batch":
            a, mean, rstd = fastnorm.batch_norm(z, axis=1, return_stats=True, **threads)
            stats = (mean, rstd)
        elif norm == "layer":
            a, mean, rstd = fastnorm.layer_norm(z, return_stats=True, **threads)
            stats = (mean, rstd)
        else:
            a = z
        out = a if act_fwd is None else act_fwd(a, **threads)
        rec.record(f"layer{layer}", out, preactivations=a)
        saved.append((h, z, stats, a))
        weights.append(w)
        h = out

    if backward:
        dh = rng.standard_normal((batch_size, width))
        for layer in range(depth, 0, -1):
            say(f"layer {layer}/{depth}: backward")
            h_in, z, stats, a = saved[layer - 1]
            da = dh if act_bwd is None else act_bwd(dh, a, **threads)
            if norm == "batch":
                dz = fastnorm.batch_norm_backward(da, z, *stats, axis=1, dx_only=True, **threads)[0]
            elif norm == "layer":
                dz = fastnorm.layer_norm_backward(da, z, *stats, dx_only=True, **threads)[0]
            else:
                dz = da
            dw = h_in.T @ dz
            rec.record_gradient(f"layer{layer}", dh, weight_gradient=dw)
            dh = dz @ weights[layer - 1].T

    config = {"depth": depth, "width": width, "batch_size": batch_size, "activation": activation, "init": init,
              "std": std, "norm": norm, "backward": backward, "seed": seed}
    return rec.result(config)
