"""Train a small NumPy MLP with normdrop's BatchNorm1d, Dropout and LayerNorm.

The network classifies points of a synthetic three-class data set (three noisy
interleaved spirals in 2-D, lifted to 16 features)::

    Linear(16, 64) -> BatchNorm1d(64) -> ReLU -> Dropout(0.2)
    -> Linear(64, 64) -> LayerNorm(64) -> ReLU -> Linear(64, 3) -> softmax cross-entropy

``Linear`` and ``ReLU`` are written here in plain NumPy; the normalisation and
dropout layers are normdrop's, each with its own ``backward``. Training stops
half-way, pickles everything it needs (model, optimiser state, data-order
generator, step), and a second run resumes from that checkpoint and ends with
exactly the numbers of an uninterrupted run.

Run it as ``python docs/examples/mlp_training.py [PLOT.png]``; with a file name
(and matplotlib installed) it draws the loss and accuracy curves.
"""

from __future__ import annotations

import pickle
import sys

import numpy as np

import normdrop

STEPS = 300  # training steps (mini-batches)
CHECKPOINT_STEP = 150  # where the interrupted run stops and saves
BATCH = 64
LR = 0.05
MOMENTUM = 0.9


# ----- data ---------------------------------------------------------------------------
def make_data(n_per_class: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three noisy spirals, lifted to 16 features by a fixed random projection."""
    rng = np.random.default_rng(seed)
    points, labels = [], []
    for k in range(3):
        t = np.linspace(0.1, 1.0, n_per_class)
        angle = 6.0 * t + 2.0 * np.pi * k / 3 + rng.normal(0.0, 0.35, n_per_class)
        points.append(np.c_[t * np.cos(angle), t * np.sin(angle)])
        labels.append(np.full(n_per_class, k))
    x2 = np.concatenate(points)
    lift = rng.standard_normal((2, 16))
    x = np.tanh(x2 @ lift) + 0.1 * rng.standard_normal((len(x2), 16))
    return x.astype(np.float32), np.concatenate(labels)


# ----- the two layers normdrop does not provide --------------------------------------
class Linear:
    """``y = x @ weight + bias`` with a backward pass, in plain NumPy."""

    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator) -> None:
        bound = 1.0 / np.sqrt(n_in)  # PyTorch's default initialisation
        self.weight = rng.uniform(-bound, bound, (n_in, n_out)).astype(np.float32)
        self.bias = rng.uniform(-bound, bound, n_out).astype(np.float32)
        self.grads = {"weight": np.zeros_like(self.weight), "bias": np.zeros_like(self.bias)}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        return x @ self.weight + self.bias

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        self.grads["weight"] += self._x.T @ grad_output
        self.grads["bias"] += grad_output.sum(axis=0)
        return grad_output @ self.weight.T

    def named_parameters(self):
        return [("weight", self.weight), ("bias", self.bias)]


class ReLU:
    def __call__(self, x: np.ndarray) -> np.ndarray:
        self._positive = x > 0
        return x * self._positive

    def backward(self, grad_output: np.ndarray) -> np.ndarray:
        return grad_output * self._positive


# ----- the model ----------------------------------------------------------------------
class MLP:
    """The layers in order; backward runs them in reverse."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.layers = [
            Linear(16, 64, rng),
            normdrop.BatchNorm1d(64),
            ReLU(),
            normdrop.Dropout(0.2, seed=seed),
            Linear(64, 64, rng),
            normdrop.LayerNorm(64),
            ReLU(),
            Linear(64, 3, rng),
        ]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, grad: np.ndarray) -> None:
        for layer in reversed(self.layers):
            grad = layer.backward(grad)

    def train(self, mode: bool = True) -> None:
        for layer in self.layers:
            if isinstance(layer, normdrop.Module):
                layer.train(mode)

    def parameters_and_grads(self):
        """``(key, parameter, gradient)`` for every learnable array (the live arrays)."""
        for i, layer in enumerate(self.layers):
            if hasattr(layer, "named_parameters"):
                for name, value in layer.named_parameters():
                    yield f"{i}.{name}", value, layer.grads[name]

    def zero_grad(self) -> None:
        for layer in self.layers:
            if isinstance(layer, normdrop.Module):
                layer.zero_grad()
            elif isinstance(layer, Linear):
                for grad in layer.grads.values():
                    grad[...] = 0


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy and its gradient with respect to ``logits``."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = len(labels)
    grad = np.exp(log_p)
    grad[np.arange(n), labels] -= 1.0
    return float(-log_p[np.arange(n), labels].mean()), grad / n


# ----- training -----------------------------------------------------------------------
def new_run(seed: int = 0) -> dict:
    """Everything a training run carries from step to step."""
    return {
        "model": MLP(seed),
        "velocity": {},  # SGD momentum buffers, by parameter key
        "order": np.random.default_rng(seed + 1),  # mini-batch sampling
        "step": 0,
        "losses": [],  # of the mini-batches since the last record
        "history": {"step": [], "loss": [], "train_acc": [], "test_acc": []},
    }


def accuracy(model: MLP, x: np.ndarray, y: np.ndarray) -> float:
    model.train(False)  # running statistics, no dropout
    predicted = model(x).argmax(axis=1)
    model.train(True)
    return float((predicted == y).mean())


def train(run: dict, data: tuple, until: int) -> dict:
    """Train ``run`` in place up to step ``until``; return it."""
    x_train, y_train, x_test, y_test = data
    model = run["model"]
    model.train(True)
    while run["step"] < until:
        batch = run["order"].choice(len(x_train), BATCH, replace=False)
        model.zero_grad()
        loss, grad = cross_entropy(model(x_train[batch]), y_train[batch])
        model.backward(grad.astype(np.float32))
        for key, param, g in model.parameters_and_grads():
            v = run["velocity"].setdefault(key, np.zeros_like(param))
            v *= MOMENTUM
            v += g
            param -= LR * v  # in place: the layers keep using the same arrays
        run["step"] += 1
        run["losses"].append(loss)
        if run["step"] % 10 == 0:  # record the mean loss of the last 10 steps, accuracies
            history = run["history"]
            history["step"].append(run["step"])
            history["loss"].append(float(np.mean(run["losses"])))
            run["losses"].clear()
            history["train_acc"].append(accuracy(model, x_train, y_train))
            history["test_acc"].append(accuracy(model, x_test, y_test))
    return run


def split_data(seed: int = 0) -> tuple:
    x, y = make_data(seed=seed)
    idx = np.random.default_rng(seed + 2).permutation(len(x))
    test, train_idx = idx[:180], idx[180:]
    return x[train_idx], y[train_idx], x[test], y[test]


def plot(history: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(8, 3), dpi=100)
    ax_loss.plot(history["step"], history["loss"])
    ax_loss.set(xlabel="step", ylabel="training loss (mean of 10 steps)", yscale="log")
    ax_acc.plot(history["step"], history["train_acc"], label="train")
    ax_acc.plot(history["step"], history["test_acc"], label="test")
    ax_acc.set(xlabel="step", ylabel="accuracy", ylim=(0, 1))
    ax_acc.legend(loc="lower right")
    for ax in (ax_loss, ax_acc):
        ax.axvline(CHECKPOINT_STEP, color="grey", linestyle=":", linewidth=1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(plot_path: str | None = None) -> dict:
    data = split_data()

    # An uninterrupted run.
    full = train(new_run(), data, until=STEPS)

    # The same run, interrupted: train half-way, checkpoint, "restart", resume.
    checkpoint = pickle.dumps(train(new_run(), data, until=CHECKPOINT_STEP))
    resumed = train(pickle.loads(checkpoint), data, until=STEPS)

    final = {k: v[-1] for k, v in full["history"].items()}
    same = all(
        np.array_equal(a, b)
        for (_, a, _), (_, b, _) in zip(
            full["model"].parameters_and_grads(),
            resumed["model"].parameters_and_grads(),
            strict=True,
        )
    )
    print(
        f"after {STEPS} steps: loss {final['loss']:.3f}, "
        f"train accuracy {final['train_acc']:.3f}, test accuracy {final['test_acc']:.3f}"
    )
    print(f"resumed from step {CHECKPOINT_STEP}: identical parameters: {same}")
    if plot_path is not None:
        plot(full["history"], plot_path)
    return {"full": full, "resumed": resumed, "identical": same}


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
