"""First-order optimisers over `Params` and the seeded minibatch schedule (pure NumPy).

Every optimiser maps a gradient `g_t` (of the loss on the step's batch) to a parameter update,
with the effective learning rate `lr` (the caller passes `lr * net.lr_scale`, MATH.md s.4):

- ``gd``:       `theta <- theta - lr g` on the full training set (paper eq. 3);
- ``sgd``:      the same on the minibatch of the step (`batch_size` samples);
- ``momentum``: heavy ball, `v <- mu v + g`, `theta <- theta - lr v` (`v_0 = 0`), on minibatches
  when `batch_size < N`, else on the full batch;
- ``adam``:     Kingma & Ba 2015, `m <- b1 m + (1 - b1) g`, `s <- b2 s + (1 - b2) g^2`,
  `theta <- theta - lr m_hat / (sqrt(s_hat) + eps)` with the bias corrections
  `m_hat = m / (1 - b1^t)`, `s_hat = s / (1 - b2^t)`. It is the *negative control* of the
  constant-kernel picture: its per-parameter normalisation makes the update a non-linear
  function of the gradient (about `lr sign(g)` early on), so neither the network nor its
  linearisation follows `f <- f - lr Theta_0 dL/df`: there is no constant-kernel prediction
  (`kernel_predictions` refuses it). Every parameter moves O(lr) per step whatever its gradient's
  size, so at a fixed lr the function moves faster the wider the net (~ sqrt(width) per step
  in NTK parameterization) and the relative parameter movement does not fall as width^-1/2
  (MATH.md s.6: "Parameter movement is n^-1/2" for GD). Measured (erf and relu, sigma_b 0.5,
  N = 8, 100 steps, widths 64..4096, 3 seeds): at fixed lr = 1e-3 the movement
  slope is -0.2 (GD: -0.5) and the final loss falls from 0.4 to 0.04 with width; with
  lr ~ width^-1/2 (matched function speed) the kernel drift falls at GD's rates (erf -0.9,
  relu -0.7). So Adam breaks the kernel *prediction*, not necessarily the drift's decay.

The first three are linear in the gradient with a state that is itself linear in past
gradients: this is what lets the linearised model's training be written in function space
(`kernel_predictions`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ntk_sweep.core.checks import check_choice, check_int, check_positive
from ntk_sweep.core.network import (
    Params,
    sgd_update,
    zeros_like,
)

OPTIMIZERS = ("gd", "sgd", "momentum", "adam")
# the optimisers whose linearised-model training has a constant-kernel form (kernel_predictions)
KERNEL_OPTIMIZERS = ("gd", "sgd", "momentum")
# mixed into the minibatch seed so the batch order is independent of init_params(seed)'s draws
_BATCH_STREAM = 0x5EED_BA7C


@dataclass(frozen=True)
class Optimizer:
    """An optimiser with its hyperparameters: `lr` is the effective learning rate, `momentum`
    the heavy-ball mu (momentum only), `betas` and `eps` Adam's (adam only)."""

    name: str
    lr: float
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        check_choice("optimizer", self.name, OPTIMIZERS)
        check_positive("lr", self.lr)
        if not (math.isfinite(self.momentum) and 0 <= self.momentum < 1):
            raise ValueError(f"momentum={self.momentum!r} is invalid: expected 0 <= momentum < 1")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas={self.betas!r} is invalid: expected each in [0, 1)")
        check_positive("eps", self.eps)

    def init(self, params: Params) -> tuple:
        """The optimiser's state before the first step: () for gd/sgd, the velocity (zeros)
        for momentum, `(t, m, s)` for adam."""
        if self.name == "momentum":
            return (zeros_like(params),)
        if self.name == "adam":
            return (0, zeros_like(params), zeros_like(params))
        return ()

    def step(self, params: Params, grads: Params, state: tuple) -> tuple[Params, tuple]:
        """One update (module docstring): `(new params, new state)`, new arrays throughout."""
        if self.name in ("gd", "sgd"):
            return sgd_update(params, grads, self.lr), state
        if self.name == "momentum":
            mu = self.momentum
            velocity = _map(lambda v, g: mu * v + g, state[0], grads)
            return sgd_update(params, velocity, self.lr), (velocity,)
        (b1, b2), (t, m, s) = self.betas, state
        t += 1
        m = _map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        s = _map(lambda s, g: b2 * s + (1 - b2) * (g * g), s, grads)
        c1, c2 = 1 - b1**t, 1 - b2**t
        direction = _map(lambda m, s: (m / c1) / (np.sqrt(s / c2) + self.eps), m, s)
        return sgd_update(params, direction, self.lr), (t, m, s)


def _map(fn: Callable[..., np.ndarray], *trees: Params) -> Params:
    """`fn` applied leaf by leaf (each layer's W, then b) over Params-shaped lists."""
    return [
        (fn(*(w for w, _ in layers)), fn(*(b for _, b in layers)))
        for layers in zip(*trees, strict=True)
    ]


def check_batch_size(optimizer: str, batch_size: int | None, n: int) -> None:
    """Raise ValueError unless `batch_size` fits the optimiser and the N training samples:
    gd takes none (it is full batch), sgd needs one, momentum and adam take one or none
    (None: full batch). A batch size must be an integer in [1, N]."""
    check_choice("optimizer", optimizer, OPTIMIZERS)
    if optimizer == "gd" and batch_size is not None:
        raise ValueError(
            f"batch_size={batch_size!r} is invalid for optimizer='gd' (full batch): "
            "expected null, or use optimizer=sgd|momentum"
        )
    if optimizer == "sgd" and batch_size is None:
        raise ValueError("batch_size=None is invalid for optimizer='sgd': expected an integer")
    if batch_size is not None:
        check_int("batch_size", batch_size, 1)
        if batch_size > n:
            raise ValueError(
                f"batch_size={batch_size!r} is invalid: expected an integer in [1, N={n}]"
            )


def minibatches(
    n: int, batch_size: int | None, steps: int, seed: int
) -> Iterator[np.ndarray | slice]:
    """The batch of each of `steps` steps: sorted sample indices, or `slice(None)` (every
    sample, as a view: the full-batch path is then the same operations on the same arrays) when
    `batch_size` is None or N.

    Epochs: a fresh permutation of the N samples per epoch, drawn in turn from
    `numpy.random.default_rng([seed, _BATCH_STREAM])` (deterministic for a seed, independent of
    the parameter draws of `init_params(seed)`), cut into consecutive batches of `batch_size`.
    The last batch of an epoch is smaller when `batch_size` does not divide N (drop_last=False:
    every sample is visited exactly once per epoch); its loss is still its own mean, so its
    samples weigh more in that step.
    """
    check_int("n", n, 1)
    check_int("steps", steps, 0)
    check_int("seed", seed, 0)
    if batch_size is None or batch_size == n:
        for _ in range(steps):
            yield slice(None)
        return
    check_int("batch_size", batch_size, 1)
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size!r} is invalid: expected an integer in [1, N={n}]")
    rng = np.random.default_rng([seed, _BATCH_STREAM])
    step = 0
    while step < steps:
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            if step == steps:
                return
            yield np.sort(order[start : start + batch_size])
            step += 1
