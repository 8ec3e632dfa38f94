"""Fully connected networks with K >= 1 outputs, their gradients and their linearisation.

Everything here is pure NumPy (but `fused_evaluation`, which calls a compiled kernel of
`_fused`, imported lazily): arrays in, arrays out. Notation follows MATH.md section 1:
`z^1 = c_1 x W^1 + b^1`, `h^l = phi(z^l)`, `z^{l+1} = c_{l+1} h^l W^{l+1} + b^{l+1}`,
`f = z^{L+1}`, where the forward multiplier `c_l` depends on the parameterization:

- ``ntk``:        `c_l = sigma_w / sqrt(fan_in)`, weights drawn N(0, 1) (the paper's eq. 1);
- ``standard``:   `c_l = 1`, weights drawn N(0, sigma_w^2 / fan_in) (same function at init);
- ``mean_field``: as ``ntk`` but the output layer uses `sigma_w / fan_in` and the learning rate
  is multiplied by the width, so the function moves at a width-independent rate while the
  features move O(1): the regime where the kernel does not stay constant. The output bias
  gets the multiplier `1 / sqrt(width)` (`f = sigma_w h.w / n + b / sqrt(n)`): unscaled, its
  NTK contribution would stay 1 while every other one is O(1/n), and the width-scaled
  learning rate would make gradient descent diverge along it.

Lazy-to-rich dial (Chizat & Bach 2019, "On lazy training"): with `alpha` set, the model is the
centred, scaled network `f = alpha (f_net(x; theta) - f_net(x; theta_0))`, trained with the
learning rate divided by `alpha^2`. The output layer's weight and bias multipliers carry the
factor `alpha` (so every gradient, and the NTK, are those of `alpha f_net`: NTK `alpha^2 Theta`),
`lr_scale` the `1 / alpha^2`, and `f_net(x; theta_0)` is subtracted wherever an output is formed
(`Linearization.centre`). The function-space dynamics at t = 0 are then the same for every alpha
(`lr / alpha^2 * alpha^2 Theta = lr Theta`), while the parameters move O(1/alpha): alpha -> inf
is the lazy (linearised) limit, small alpha the rich regime. `alpha=None` (the default) is the
plain, uncentred network; `alpha=1` is the centred network (same kernel and learning rate, but
`f_0 = 0`), so a sweep over alpha compares like with like.

Biases are the parameters themselves, drawn N(0, sigma_b^2) (MATH.md section 1 convention);
`z^l = c_l h W^l + c^b_l b^l` with bias multiplier `c^b_l = 1` except as noted for mean_field.
Weights are stored as `(fan_in, fan_out)` so a batch `(N, fan_in)` multiplies from the left.

Outputs: `outputs = K` (default 1) is the output layer's fan_out, `f = z^{L+1}` of shape (N, K),
every output with the same multipliers (alpha and mean_field scale each output alike). K = 1
keeps the scalar shape (N,) and the scalar network's operations (`h @ w[:, 0]`), so its numbers
are bit for bit those of the scalar-output code. Targets, cotangents and tangents in output
space have the shape of f; flattened, they are sample-major (`f.reshape(-1)`, index i K + a).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ntk_sweep.core.checks import check_choice, check_int, check_positive
from ntk_sweep.core.losses import loss_value

ACTIVATIONS = ("relu", "erf", "tanh", "linear")
PARAMETERIZATIONS = ("ntk", "standard", "mean_field")
DTYPES = ("float64", "float32")

Params = list[tuple[np.ndarray, np.ndarray]]
"""Per weight layer l = 1..depth+1: `(W (fan_in, fan_out), b (fan_out,))`."""


def kink_inputs(net: MLP, x: np.ndarray) -> np.ndarray:
    """Boolean mask of the inputs at relu's kink at init: with sigma_b = 0, an input x = 0 has
    every first-layer pre-activation exactly 0 (`Sigma^1(x, x) = 0`, MATH.md s.3), where
    relu'(0) = 0; the first bias update switches half the units on, an O(1) jump in the
    kernel at any width. False everywhere for other activations or sigma_b > 0."""
    x = as_inputs(net, x)
    if net.activation != "relu" or net.sigma_b != 0:
        return np.zeros(len(x), dtype=bool)
    return ~np.any(x != 0, axis=1)


@dataclass(frozen=True)
class MLP:
    """A fully connected network with `depth` hidden layers of `width` units and `outputs`
    outputs (f of shape (N,) for one output, (N, outputs) otherwise)."""

    input_dim: int
    width: int
    depth: int = 1
    activation: str = "relu"
    parameterization: str = "ntk"
    sigma_w: float = 1.0
    sigma_b: float = 0.0
    dtype: str = "float64"
    alpha: float | None = None  # lazy-to-rich output scale (module docstring); None: off
    outputs: int = 1  # K, the output layer's fan_out

    def __post_init__(self) -> None:
        check_int("input_dim", self.input_dim, 1)
        check_int("width", self.width, 1)
        check_int("depth", self.depth, 1)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("parameterization", self.parameterization, PARAMETERIZATIONS)
        check_positive("sigma_w", self.sigma_w)
        if not (math.isfinite(self.sigma_b) and self.sigma_b >= 0):
            raise ValueError(f"sigma_b={self.sigma_b!r} is invalid: expected a finite number >= 0")
        check_choice("dtype", self.dtype, DTYPES)
        if self.alpha is not None:
            check_positive("alpha", self.alpha)
        check_int("outputs", self.outputs, 1)

    @property
    def centred(self) -> bool:
        """Whether the model is the centred `alpha (f_net - f_net(theta_0))` (alpha set)."""
        return self.alpha is not None

    @property
    def n_layers(self) -> int:
        """Number of weight layers, output layer included (depth + 1)."""
        return self.depth + 1

    @property
    def fan_ins(self) -> list[int]:
        return [self.input_dim] + [self.width] * self.depth

    @property
    def fan_outs(self) -> list[int]:
        return [self.width] * self.depth + [self.outputs]

    @property
    def multipliers(self) -> list[float]:
        """Forward multiplier `c_l` of each weight layer (see the module docstring)."""
        if self.parameterization == "standard":
            c = [1.0] * self.n_layers
            if self.centred:
                c[-1] = float(self.alpha)
            return c
        c = [self.sigma_w / math.sqrt(n) for n in self.fan_ins]
        if self.parameterization == "mean_field":
            c[-1] = self.sigma_w / self.fan_ins[-1]
        if self.centred:
            c[-1] *= self.alpha
        return c

    @property
    def bias_multipliers(self) -> list[float]:
        """Multiplier `c^b_l` of each layer's bias: 1, but 1/sqrt(width) on mean_field's output
        (times alpha on the output for the centred model)."""
        cb = [1.0] * self.n_layers
        if self.parameterization == "mean_field":
            cb[-1] = 1 / math.sqrt(self.fan_ins[-1])
        if self.centred:
            cb[-1] *= self.alpha
        return cb

    @property
    def lr_scale(self) -> float:
        """Factor applied to the user's learning rate: the width for mean_field, else 1; divided
        by `alpha^2` for the centred model (module docstring)."""
        scale = float(self.width) if self.parameterization == "mean_field" else 1.0
        return scale / float(self.alpha) ** 2 if self.centred else scale

    @property
    def n_params(self) -> int:
        return sum(i * o + o for i, o in zip(self.fan_ins, self.fan_outs, strict=True))


def init_params(net: MLP, seed: int) -> Params:
    """Draw the initial parameters from `numpy.random.default_rng(seed)`.

    Draws are made in float64 layer by layer (W then b), so the same seed gives bit-identical
    parameters on every machine and the same underlying normals in every parameterization (and,
    for one output, the stream of a scalar network: the output layer's draws come last).
    """
    check_int("seed", seed, 0)
    rng = np.random.default_rng(seed)
    params: Params = []
    for fan_in, fan_out in zip(net.fan_ins, net.fan_outs, strict=True):
        w = rng.standard_normal((fan_in, fan_out))
        b = net.sigma_b * rng.standard_normal(fan_out)
        if net.parameterization == "standard":
            w *= net.sigma_w / math.sqrt(fan_in)
        params.append((w.astype(net.dtype, copy=False), b.astype(net.dtype, copy=False)))
    return params


def phi(activation: str, z: np.ndarray) -> np.ndarray:
    """The activation function."""
    if activation == "relu":
        return np.maximum(z, 0)
    if activation == "erf":
        # imported here: scipy.special costs ~0.3 s to import, which relu, tanh and linear
        # networks never need
        from scipy.special import erf

        return erf(z)
    if activation == "tanh":
        return np.tanh(z)
    return z


def phi_prime(activation: str, z: np.ndarray) -> np.ndarray:
    """Derivative of the activation; relu'(0) = 0 as in the paper's eq. 11."""
    if activation == "relu":
        return (z > 0).astype(z.dtype)
    if activation == "erf":
        return (2 / math.sqrt(math.pi)) * np.exp(-(z * z))
    if activation == "tanh":
        return 1 - np.tanh(z) ** 2
    return np.ones_like(z)


@dataclass(frozen=True)
class ForwardCache:
    """What the backward pass and Jacobian-vector products need from one forward pass.

    `inputs[l]` is the (unscaled) input of weight layer l+1, `slopes[l]` is phi'(z) of hidden
    layer l+1, and `f` the output, (N,) or (N, K).
    """

    f: np.ndarray
    inputs: list[np.ndarray]
    slopes: list[np.ndarray]


def as_inputs(net: MLP, x: np.ndarray) -> np.ndarray:
    """Check and cast an input batch to `(N, input_dim)` in the network's dtype."""
    x = np.asarray(x, dtype=net.dtype)
    if x.ndim == 1 and net.input_dim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] != net.input_dim or x.shape[0] == 0:
        raise ValueError(
            f"x has shape {x.shape}: expected (N, {net.input_dim}) with N >= 1 "
            f"(input_dim={net.input_dim})"
        )
    return x


# Rows of an input batch evaluated together: a block of about this many activations (8 MiB in
# float64) stays in the CPU's cache and its temporaries are reused, where whole-batch
# temporaries of a wide network (200 inputs x width 10^5 = 160 MB each) cost a page fault per
# 4 KiB, every time. A batch that fits in one block takes the whole-batch path, bit for bit.
BLOCK_ELEMENTS = 1 << 20


def row_blocks(net: MLP, n_rows: int) -> list[slice]:
    """The row blocks `forward`, `forward_cache` and `jvp` evaluate a batch of `n_rows` in:
    each row's result is the same whatever block it is in (to rounding: BLAS may sum a
    product's terms in another order for another block size), and the same partition is used
    by all three, so `forward` and `forward_cache` agree bit for bit."""
    rows = max(1, BLOCK_ELEMENTS // max(net.width, net.outputs, 1))
    return [slice(s, min(s + rows, n_rows)) for s in range(0, n_rows, rows)]


def forward_cache(net: MLP, params: Params, x: np.ndarray) -> ForwardCache:
    """Forward pass keeping every layer's input and activation slope."""
    x = as_inputs(net, x)
    blocks = row_blocks(net, len(x))
    if len(blocks) == 1:
        return _forward_cache_rows(net, params, x)
    n, dtype = len(x), x.dtype
    f = np.empty((n,) if net.outputs == 1 else (n, net.outputs), dtype)
    inputs = [x] + [np.empty((n, net.width), dtype) for _ in range(net.depth)]
    slopes = [np.empty((n, net.width), dtype) for _ in range(net.depth)]
    for rows in blocks:
        part = _forward_cache_rows(net, params, x[rows])
        f[rows] = part.f
        for l in range(net.depth):
            inputs[l + 1][rows], slopes[l][rows] = part.inputs[l + 1], part.slopes[l]
    return ForwardCache(f=f, inputs=inputs, slopes=slopes)


def _forward_cache_rows(net: MLP, params: Params, x: np.ndarray) -> ForwardCache:
    c = net.multipliers
    inputs, slopes = [x], []
    h = x
    for l, (w, b) in enumerate(params[:-1]):
        z = c[l] * (h @ w) + b
        slopes.append(phi_prime(net.activation, z))
        h = phi(net.activation, z)
        inputs.append(h)
    f = _readout(net, params[-1], h)
    return ForwardCache(f=f, inputs=inputs, slopes=slopes)


def _readout(net: MLP, layer: tuple[np.ndarray, np.ndarray], h: np.ndarray) -> np.ndarray:
    """The output layer `f = c h W + c^b b`: (N,) for one output (a matrix-vector product, as
    for a scalar network), (N, K) otherwise."""
    w, b = layer
    c, cb = net.multipliers[-1], net.bias_multipliers[-1]
    if net.outputs == 1:
        return c * (h @ w[:, 0]) + cb * b[0]
    return c * (h @ w) + cb * b


def forward(net: MLP, params: Params, x: np.ndarray) -> np.ndarray:
    """Network output f(x), shape (N,) or (N, K): `forward_cache(...).f` without keeping the
    layers' inputs and slopes (the same operations in the same order, so the same bits)."""
    x = as_inputs(net, x)
    blocks = row_blocks(net, len(x))
    if len(blocks) == 1:
        return _forward_rows(net, params, x)
    return np.concatenate([_forward_rows(net, params, x[rows]) for rows in blocks])


def _forward_rows(net: MLP, params: Params, h: np.ndarray) -> np.ndarray:
    c = net.multipliers
    for l, (w, b) in enumerate(params[:-1]):
        z = h @ w
        z *= c[l]
        z += b
        h = phi(net.activation, z)
    return _readout(net, params[-1], h)


def vjp(net: MLP, params: Params, cache: ForwardCache, cotangent: np.ndarray) -> Params:
    """Vector-Jacobian product `J^T g` (hand-written backward pass), as a Params-shaped list;
    `g` has the shape of f ((N,) or (N, K))."""
    c, cb = net.multipliers, net.bias_multipliers
    delta = np.asarray(cotangent, dtype=net.dtype)
    delta = delta[:, None] if delta.ndim == 1 else delta
    grads: Params = [None] * net.n_layers  # type: ignore[list-item]
    for l in reversed(range(net.n_layers)):
        w, _ = params[l]
        grads[l] = (c[l] * (cache.inputs[l].T @ delta), cb[l] * delta.sum(axis=0))
        if l > 0:
            delta = (c[l] * (delta @ w.T)) * cache.slopes[l - 1]
    return grads


def jvp(net: MLP, params: Params, cache: ForwardCache, tangent: Params) -> np.ndarray:
    """Jacobian-vector product `J dtheta` (forward-mode derivative of f), the shape of f."""
    blocks = row_blocks(net, len(cache.inputs[0]))
    if len(blocks) == 1:
        dz = _jvp_rows(net, params, cache.inputs, cache.slopes, tangent)
    else:
        dz = np.concatenate(
            [
                _jvp_rows(
                    net,
                    params,
                    [a[rows] for a in cache.inputs],
                    [a[rows] for a in cache.slopes],
                    tangent,
                )
                for rows in blocks
            ]
        )
    return dz[:, 0] if net.outputs == 1 else dz


def _jvp_rows(
    net: MLP,
    params: Params,
    inputs: list[np.ndarray],
    slopes: list[np.ndarray],
    tangent: Params,
) -> np.ndarray:
    c, cb = net.multipliers, net.bias_multipliers
    dh = None  # the input does not move
    for l, ((w, _), (dw, db)) in enumerate(zip(params, tangent, strict=True)):
        dz = inputs[l] @ dw
        if dh is not None:
            dz += dh @ w
        # in place: c*dz + cb*db and slopes*dz to the same bits, without N x width temporaries
        dz *= c[l]
        dz += cb[l] * db
        if l < net.depth:
            dz *= slopes[l]
            dh = dz
    return dz


def as_targets(net: MLP, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Targets in the shape of f: (N,) for one output (any shape with N values), (N, K)."""
    if net.outputs == 1:
        y = np.asarray(y, dtype=net.dtype).reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise ValueError(
                f"y has {y.shape[0]} values but x has {x.shape[0]} rows: expected equal"
            )
        return y
    y = np.asarray(y, dtype=net.dtype)
    if y.shape != (x.shape[0], net.outputs):
        raise ValueError(
            f"y has shape {y.shape}: expected ({x.shape[0]}, {net.outputs}) "
            f"(N={x.shape[0]} rows of x, outputs={net.outputs})"
        )
    return y


def gradient(net: MLP, params: Params, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
    """Loss and its gradient with respect to every parameter."""
    cache = forward_cache(net, params, x)
    y = as_targets(net, cache.inputs[0], y)
    r = cache.f - y
    return loss_value("mse", cache.f, y), vjp(net, params, cache, r / len(r))


def sgd_update(params: Params, grads: Params, lr: float) -> Params:
    """`theta - lr * grad` for every layer (paper eq. 3), returning new arrays."""
    return [(w - lr * gw, b - lr * gb) for (w, b), (gw, gb) in zip(params, grads, strict=True)]


def gd_step(
    net: MLP, params: Params, x: np.ndarray, y: np.ndarray, lr: float
) -> tuple[float, Params]:
    """One full-batch gradient-descent step with learning rate `lr * net.lr_scale`."""
    check_positive("lr", lr)
    loss, grads = gradient(net, params, x, y)
    return loss, sgd_update(params, grads, lr * net.lr_scale)


class Linearization:
    """The first-order Taylor model `f_lin(x; theta) = f(x; theta0) + J0(x)(theta - theta0)`.

    Bound to one input set `x`; represented by `delta = theta - theta0`. Predictions and
    gradients are JVPs and VJPs through the network at theta0, never an N x P Jacobian.

    For the centred model (`net.centred`) every output is taken relative to the network's output
    at theta0 (`centre`): `f0` is then 0 and `predict` is `J0 delta`.

    `cached=False` (predictions only, e.g. on test inputs): the forward pass at theta0 is redone
    block by block at each `predict` instead of keeping every layer's N x width inputs and
    slopes. For a wide network that is faster (the blocks stay in the CPU's cache where the
    kept arrays are read from memory) and takes no memory; the numbers are the same bits.
    """

    def __init__(self, net: MLP, params0: Params, x: np.ndarray, cached: bool = True) -> None:
        self.net = net
        self.params0 = params0
        self.x = as_inputs(net, x)
        self.cache = forward_cache(net, params0, self.x) if cached else None

    @functools.cached_property
    def f_init(self) -> np.ndarray:
        """The network's raw output at theta0 on the bound inputs, computed when first needed
        (`evaluate`'s fused path brings its own). `forward` equals `forward_cache(...).f` bit
        for bit (the same row blocks)."""
        return self.cache.f if self.cache is not None else forward(self.net, self.params0, self.x)

    @property
    def f0(self) -> np.ndarray:
        """The model's output at theta0 on the bound inputs (zeros for the centred model)."""
        return np.zeros_like(self.f_init) if self.net.centred else self.f_init

    def centre(self, f_net: np.ndarray) -> np.ndarray:
        """The model's output from the network's raw output `f_net` on the bound inputs:
        `f_net - f_net(theta0)` for the centred model, `f_net` itself otherwise."""
        return f_net - self.f_init if self.net.centred else f_net

    def predict(self, delta: Params) -> np.ndarray:
        if self.cache is not None:
            return self.f0 + jvp(self.net, self.params0, self.cache, delta)
        blocks = []
        for rows in row_blocks(self.net, len(self.x)):
            block = _forward_cache_rows(self.net, self.params0, self.x[rows])
            blocks.append(_jvp_rows(self.net, self.params0, block.inputs, block.slopes, delta))
        dz = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        return self.f0 + (dz[:, 0] if self.net.outputs == 1 else dz)

    def evaluate(
        self, params: Params, delta: Params, backend: str = "auto"
    ) -> tuple[np.ndarray, np.ndarray]:
        """The model's output at `params` and the linearised model's at `delta` on the bound
        inputs: `(centre(forward(net, params, x)), predict(delta))`.

        For one hidden layer with `backend` "auto" or "fused" (and numba installed), a batch of
        more than one row block (`row_blocks`) goes through `fused_evaluation` instead: one pass
        over the units, no N x width array, the same numbers to rounding (~1e-15 relative in
        float64); the network's output at theta0 is then the kernel's own (`f_init` is not
        used), so the centred model is exactly 0 at theta0. Smaller batches keep the NumPy bits.
        """
        check_choice("backend", backend, BACKENDS)
        if not use_fused_evaluation(self.net, len(self.x), backend):
            return self.centre(forward(self.net, params, self.x)), self.predict(delta)
        f, f_at0, jvp0 = fused_evaluation(self.net, params, self.params0, self.x, delta)
        if self.net.centred:
            return f - f_at0, jvp0
        return f, f_at0 + jvp0

    def gradient(self, delta: Params, y: np.ndarray) -> tuple[float, Params]:
        """Loss of the linearised model and its gradient with respect to delta."""
        if self.cache is None:
            raise ValueError("Linearization(cached=False) predicts only: no gradient")
        f = self.predict(delta)
        y = as_targets(self.net, self.x, y)
        r = f - y
        return loss_value("mse", f, y), vjp(self.net, self.params0, self.cache, r / len(r))


def zeros_like(params: Params) -> Params:
    return [(np.zeros_like(w), np.zeros_like(b)) for w, b in params]


def param_norm(params: Params) -> float:
    return math.sqrt(sum(float(np.vdot(w, w)) + float(np.vdot(b, b)) for w, b in params))


def param_movement(params: Params, params0: Params) -> tuple[float, list[float]]:
    """Relative parameter movement `||theta - theta0|| / ||theta0||` (MATH.md section 5).

    Returns the total and one value per weight layer (that layer's W and b together).
    """
    diff = [(w - w0, b - b0) for (w, b), (w0, b0) in zip(params, params0, strict=True)]
    per_layer = [
        param_norm([d]) / max(param_norm([p0]), np.finfo(float).tiny)
        for d, p0 in zip(diff, params0, strict=True)
    ]
    return param_norm(diff) / param_norm(params0), per_layer


BACKENDS = ("auto", "numpy", "fused")


def fused_available() -> bool:
    """Whether the compiled kernels (numba) can be imported."""
    try:
        import ntk_sweep.core._fused  # noqa: F401
    except ImportError:
        return False
    return True


"""Fused steps with at least this much work (`_fused_work`; ~10 ms on one core) share their
blocks between threads; smaller ones run on one thread, which is nearly as fast when the step
is bound by memory bandwidth and much faster when other processes compete for the cores (a
thread waiting for a descheduled sibling costs milliseconds). The result is the same either way.
Set it to 0 to always use threads (benchmarks/bench_train_step.py measures both)."""


# Fused evaluations with at least this much work (rows x units, a transcendental ~ 8) share
# their rows between threads; the result is the same either way.
FUSED_EVAL_PARALLEL_WORK = 2**24
# Units per block of the fused evaluation: three scratch rows of this many stay in L1.
FUSED_EVAL_BLOCK = 512


def use_fused_evaluation(net: MLP, n_rows: int, backend: str = "auto") -> bool:
    """Whether `Linearization.evaluate` takes `fused_evaluation`: one hidden layer, backend
    "auto" or "fused", numba installed, and a batch of more than one row block (a batch that
    fits in one block keeps the NumPy path's bits)."""
    return (
        backend != "numpy"
        and net.depth == 1
        and len(row_blocks(net, n_rows)) > 1
        and fused_available()
    )


def fused_evaluation(
    net: MLP, params: Params, params0: Params, x: np.ndarray, delta: Params
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(f(x; theta), f(x; theta0), J0(x) delta)` of a one-hidden-layer network in one compiled
    pass (`_fused.depth1_eval_*`), each the shape of f: the raw network (not centred) and the
    Jacobian-vector product of `jvp`. The same numbers as `forward` and `jvp` to rounding.
    Deterministic: fixed blocks of FUSED_EVAL_BLOCK units, partials added here."""
    from ntk_sweep.core import _fused

    if net.depth != 1:
        raise ValueError(f"fused_evaluation needs depth=1 (got depth={net.depth})")
    x = np.ascontiguousarray(as_inputs(net, x))
    dtype = np.dtype(net.dtype)
    dt = dtype.type

    def arr(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=dtype)

    (w, b), (v, b1) = params
    (w0, b0), (v0, b1_0) = params0
    (dw, db), (dv, db1) = delta
    c0, c1 = net.multipliers
    cb1 = net.bias_multipliers[1]
    n_rows, k = len(x), net.outputs
    n_blocks = -(-net.width // FUSED_EVAL_BLOCK)
    f_parts = np.empty((n_blocks, 2, n_rows, k))
    g_parts = np.empty((n_blocks, n_rows, k))
    work = n_rows * net.width * (1 if net.activation in ("relu", "linear") else 8)
    parallel = n_rows > 1 and work >= FUSED_EVAL_PARALLEL_WORK
    kernel = _fused.depth1_eval_parallel if parallel else _fused.depth1_eval_serial
    kernel(
        x,
        (arr(w), arr(b)),
        (arr(w0), arr(b0)),
        (arr(dw), arr(db)),
        (arr(v.T), arr(v0.T), arr(dv.T)),
        _fused.ACTIVATION_TAGS[net.activation],
        dt(c0),
        FUSED_EVAL_BLOCK,
        f_parts,
        g_parts,
    )
    f_sums, g_sum = f_parts.sum(axis=0), g_parts.sum(axis=0)
    b1, b1_0, db1 = arr(b1), arr(b1_0), arr(db1)
    f = (dt(c1) * f_sums[0]).astype(dtype) + cb1 * b1
    f_at0 = (dt(c1) * f_sums[1]).astype(dtype) + cb1 * b1_0
    jvp0 = (dt(c1) * g_sum).astype(dtype) + cb1 * db1
    if k == 1:
        return f[:, 0], f_at0[:, 0], jvp0[:, 0]
    return f, f_at0, jvp0
