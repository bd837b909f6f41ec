"""Train a deep fully-connected classifier in plain NumPy with fastnorm's kernels, and compare initializations.

The lecture's lesson, end to end: a 10-layer ReLU network (8 hidden layers) on the classic spiral dataset (three
interleaved arms in 2-D, generated here: nothing to download), trained with softmax cross-entropy and SGD with
momentum.  Every activation (``fastnorm.relu``), normalization (``fastnorm.layers.BatchNorm``), loss
(``fastnorm.cross_entropy``) and initialization (``fastnorm.init``) is fastnorm's; the linear layers are NumPy
matmuls.  Four runs, same data and seed:

- ``small``: weights of std 0.01.  The signal vanishes through the layers: the loss sits at ln 3 (chance).
- ``he``: He et al.'s sqrt(2 / Din).  Trains.
- ``small+bn``: std 0.01 with batch norm after every hidden linear layer: batch norm rescues the bad init.
- ``he+bn``: both.

    python examples/train_mlp.py [--epochs 30] [--plot curves.png]

prints the training loss and the train / test accuracy per run, and with ``--plot`` (matplotlib) draws the loss
curves.  tests/test_example.py runs a short version of it.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import fastnorm
from fastnorm.layers import BatchNorm

RUNS = {"small": ("small", False), "he": ("he", False), "small+bn": ("small", True), "he+bn": ("he", True)}


def spiral(points_per_class: int = 1000, classes: int = 3, noise: float = 0.2, seed: int = 0):
    """CS231n's spiral: ``classes`` arms of ``points_per_class`` points in 2-D; (x float32 (N, 2), y int (N,))."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k in range(classes):
        r = np.linspace(0.0, 1.0, points_per_class)
        t = np.linspace(k * 4.0, (k + 1) * 4.0, points_per_class) + rng.standard_normal(points_per_class) * noise
        xs.append(np.column_stack([r * np.sin(t), r * np.cos(t)]))
        ys.append(np.full(points_per_class, k))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def softmax_cross_entropy(logits: np.ndarray, y: np.ndarray):
    """Mean cross-entropy of softmax(logits) against integer labels y, and its gradient w.r.t. logits: fastnorm's
    log-softmax + NLL, loss and gradient from one pass over the logits."""
    loss, dlogits = fastnorm.cross_entropy(logits, y, return_grad=True)
    return float(loss), dlogits


class MLP:
    """Linear -> [BatchNorm] -> ReLU, ``depth`` times, then a linear classifier (``norm``: the batch-norm layer's
    class, called as norm(features, axis=1))."""

    def __init__(self, sizes: list, *, init: str, batch_norm: bool, seed: int, norm=BatchNorm):
        rng = fastnorm.random.Generator(seed)
        self.params, self.bns = [], []
        for i, (din, dout) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            if init == "small":
                w = fastnorm.init.normal((din, dout), std=0.01, rng=rng)
            else:  # He et al. 2015 for the ReLU layers; the classifier gets Xavier's 1/sqrt(Din)
                w = (fastnorm.init.xavier_normal if last else fastnorm.init.kaiming_normal)(
                    (din, dout), layout="in_out", rng=rng)
            self.params.append({"w": w, "b": np.zeros(dout, np.float32)})
            if batch_norm and not last:
                self.bns.append(norm(dout, axis=1))
        self.velocity = [{k: np.zeros_like(v) for k, v in p.items()} for p in self.params] + \
                        [{k: np.zeros_like(v) for k, v in bn.parameters().items()} for bn in self.bns]

    def train(self, mode: bool = True):
        for bn in self.bns:
            bn.train(mode)

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.cache = []
        h = x
        for i, p in enumerate(self.params[:-1]):
            z = h @ p["w"] + p["b"]
            if self.bns:
                z = self.bns[i].forward(z)
            self.cache.append((h, z))
            h = fastnorm.relu(z)
        self.cache.append((h, None))
        return h @ self.params[-1]["w"] + self.params[-1]["b"]

    def backward(self, dlogits: np.ndarray) -> list:
        grads = [None] * len(self.params)
        dh = dlogits
        for i in range(len(self.params) - 1, -1, -1):
            h, _ = self.cache[i]
            dz = dh
            grads[i] = {"w": h.T @ dz, "b": dz.sum(axis=0)}
            dh = dz @ self.params[i]["w"].T
            if i > 0:
                _, z_prev = self.cache[i - 1]
                dh = fastnorm.relu_backward(dh, z_prev)
                if self.bns:
                    dh = self.bns[i - 1].backward(dh)
        return grads

    def sgd_momentum(self, grads: list, lr: float, momentum: float = 0.9) -> None:
        """v = momentum v - lr g; p += v, for the linear layers and the batch norms' gamma and beta."""
        groups = [(p, g) for p, g in zip(self.params, grads)]
        groups += [(bn.parameters(), bn.grads) for bn in self.bns]
        for (params, g), vel in zip(groups, self.velocity):
            for k, v in vel.items():
                v *= momentum
                v -= lr * g[k]
                params[k] += v


def accuracy(model: MLP, x: np.ndarray, y: np.ndarray) -> float:
    model.train(False)
    acc = float((model.forward(x).argmax(axis=1) == y).mean())
    model.train(True)
    return acc


def train(run: str, *, epochs: int = 30, hidden: int = 64, depth: int = 8, batch_size: int = 128, lr: float = 0.05,
          seed: int = 0, points_per_class: int = 1000) -> dict:
    """One run of RUNS; returns its history: loss per epoch (mean over its batches), final train / test
    accuracy."""
    init, bn = RUNS[run]
    x, y = spiral(points_per_class, seed=seed)
    order = np.random.default_rng(seed).permutation(len(x))
    split = int(0.8 * len(x))
    xtr, ytr, xte, yte = x[order[:split]], y[order[:split]], x[order[split:]], y[order[split:]]
    model = MLP([2] + [hidden] * depth + [3], init=init, batch_norm=bn, seed=seed)
    shuffle = np.random.default_rng(seed + 1)
    losses = []
    for _ in range(epochs):
        perm = shuffle.permutation(len(xtr))
        total = 0.0
        for start in range(0, len(perm), batch_size):
            idx = perm[start:start + batch_size]
            loss, dlogits = softmax_cross_entropy(model.forward(xtr[idx]), ytr[idx])
            model.sgd_momentum(model.backward(dlogits), lr)
            total += loss * len(idx)
        losses.append(total / len(perm))
    return {"run": run, "loss": losses, "train_acc": accuracy(model, xtr, ytr), "test_acc": accuracy(model, xte, yte)}


def table(histories: list) -> str:
    epochs = len(histories[0]["loss"])
    marks = sorted({1, min(5, epochs), min(10, epochs), epochs // 2 or 1, epochs})
    head = f"{'run':<10}" + "".join(f"{'loss@' + str(e):>11}" for e in marks) + f"{'train acc':>11}{'test acc':>10}"
    lines = [head, "-" * len(head)]
    for h in histories:
        lines.append(f"{h['run']:<10}" + "".join(f"{h['loss'][e - 1]:>11.4f}" for e in marks) +
                     f"{h['train_acc']:>11.1%}{h['test_acc']:>10.1%}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--depth", type=int, default=8, help="hidden layers (default 8)")
    p.add_argument("--hidden", type=int, default=64, help="units per hidden layer (default 64)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", default=None, help="write the loss curves to this PNG (needs matplotlib)")
    args = p.parse_args(argv)
    histories = []
    for run in RUNS:
        t0 = time.perf_counter()
        histories.append(train(run, epochs=args.epochs, depth=args.depth, hidden=args.hidden, lr=args.lr,
                               seed=args.seed))
        print(f"{run}: {time.perf_counter() - t0:.1f} s", flush=True)
    print()
    print(f"spiral, 3 classes, {args.depth} hidden layers of {args.hidden} (ReLU), SGD momentum 0.9, lr {args.lr}")
    print(table(histories))
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for h in histories:
            ax.plot(range(1, len(h["loss"]) + 1), h["loss"], label=h["run"])
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=80)
        print(f"loss curves: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
