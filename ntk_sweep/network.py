"""Fully connected scalar-output networks, their gradients and their linearisation.

Everything here is pure NumPy: arrays in, arrays out. Notation follows MATH.md section 1:
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
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

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


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid: expected an integer >= {minimum}")


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is invalid: allowed values are {', '.join(allowed)}")


def check_positive(name: str, value: float) -> None:
    """Raise ValueError unless `value` is a finite number > 0."""
    if not (isinstance(value, int | float | np.floating) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} is invalid: expected a finite number > 0")


@dataclass(frozen=True)
class MLP:
    """A fully connected network with `depth` hidden layers of `width` units and scalar output."""

    input_dim: int
    width: int
    depth: int = 1
    activation: str = "relu"
    parameterization: str = "ntk"
    sigma_w: float = 1.0
    sigma_b: float = 0.0
    dtype: str = "float64"
    alpha: float | None = None  # lazy-to-rich output scale (module docstring); None: off

    def __post_init__(self) -> None:
        _check_int("input_dim", self.input_dim, 1)
        _check_int("width", self.width, 1)
        _check_int("depth", self.depth, 1)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("parameterization", self.parameterization, PARAMETERIZATIONS)
        check_positive("sigma_w", self.sigma_w)
        if not (math.isfinite(self.sigma_b) and self.sigma_b >= 0):
            raise ValueError(f"sigma_b={self.sigma_b!r} is invalid: expected a finite number >= 0")
        _check_choice("dtype", self.dtype, DTYPES)
        if self.alpha is not None:
            check_positive("alpha", self.alpha)

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
        return [self.width] * self.depth + [1]

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
    parameters on every machine and the same underlying normals in every parameterization.
    """
    _check_int("seed", seed, 0)
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
    layer l+1, and `f` the output.
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


def forward_cache(net: MLP, params: Params, x: np.ndarray) -> ForwardCache:
    """Forward pass keeping every layer's input and activation slope."""
    x = as_inputs(net, x)
    c = net.multipliers
    inputs, slopes = [x], []
    h = x
    for l, (w, b) in enumerate(params[:-1]):
        z = c[l] * (h @ w) + b
        slopes.append(phi_prime(net.activation, z))
        h = phi(net.activation, z)
        inputs.append(h)
    w, b = params[-1]
    f = c[-1] * (h @ w[:, 0]) + net.bias_multipliers[-1] * b[0]
    return ForwardCache(f=f, inputs=inputs, slopes=slopes)


def forward(net: MLP, params: Params, x: np.ndarray) -> np.ndarray:
    """Network output f(x), shape (N,): `forward_cache(...).f` without keeping the layers'
    inputs and slopes (the same operations in the same order, so the same bits)."""
    h = as_inputs(net, x)
    c = net.multipliers
    for l, (w, b) in enumerate(params[:-1]):
        z = h @ w
        z *= c[l]
        z += b
        h = phi(net.activation, z)
    w, b = params[-1]
    return c[-1] * (h @ w[:, 0]) + net.bias_multipliers[-1] * b[0]


def vjp(net: MLP, params: Params, cache: ForwardCache, cotangent: np.ndarray) -> Params:
    """Vector-Jacobian product `J^T g` (hand-written backward pass), as a Params-shaped list."""
    c, cb = net.multipliers, net.bias_multipliers
    delta = np.asarray(cotangent, dtype=net.dtype)[:, None]
    grads: Params = [None] * net.n_layers  # type: ignore[list-item]
    for l in reversed(range(net.n_layers)):
        w, _ = params[l]
        grads[l] = (c[l] * (cache.inputs[l].T @ delta), cb[l] * delta.sum(axis=0))
        if l > 0:
            delta = (c[l] * (delta @ w.T)) * cache.slopes[l - 1]
    return grads


def jvp(net: MLP, params: Params, cache: ForwardCache, tangent: Params) -> np.ndarray:
    """Jacobian-vector product `J dtheta` (forward-mode derivative of f), shape (N,)."""
    c, cb = net.multipliers, net.bias_multipliers
    dh = None  # the input does not move
    for l, ((w, _), (dw, db)) in enumerate(zip(params, tangent, strict=True)):
        dz = cache.inputs[l] @ dw
        if dh is not None:
            dz += dh @ w
        dz = c[l] * dz + cb[l] * db
        if l < net.depth:
            dh = cache.slopes[l] * dz
    return dz[:, 0]


def _as_targets(net: MLP, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=net.dtype).reshape(-1)
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"y has {y.shape[0]} values but x has {x.shape[0]} rows: expected equal")
    return y


def mse_loss(f: np.ndarray, y: np.ndarray) -> float:
    """`L = (1/2N) sum (f - y)^2` (paper eq. 2)."""
    r = f - y
    return float(r @ r) / (2 * len(r))


def gradient(net: MLP, params: Params, x: np.ndarray, y: np.ndarray) -> tuple[float, Params]:
    """Loss and its gradient with respect to every parameter."""
    cache = forward_cache(net, params, x)
    y = _as_targets(net, cache.inputs[0], y)
    r = cache.f - y
    return mse_loss(cache.f, y), vjp(net, params, cache, r / len(r))


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
    """

    def __init__(self, net: MLP, params0: Params, x: np.ndarray) -> None:
        self.net = net
        self.params0 = params0
        self.cache = forward_cache(net, params0, x)

    @property
    def f0(self) -> np.ndarray:
        """The model's output at theta0 on the bound inputs (zeros for the centred model)."""
        return np.zeros_like(self.cache.f) if self.net.centred else self.cache.f

    def centre(self, f_net: np.ndarray) -> np.ndarray:
        """The model's output from the network's raw output `f_net` on the bound inputs:
        `f_net - f_net(theta0)` for the centred model, `f_net` itself otherwise."""
        return f_net - self.cache.f if self.net.centred else f_net

    def predict(self, delta: Params) -> np.ndarray:
        return self.f0 + jvp(self.net, self.params0, self.cache, delta)

    def gradient(self, delta: Params, y: np.ndarray) -> tuple[float, Params]:
        """Loss of the linearised model and its gradient with respect to delta."""
        f = self.predict(delta)
        y = _as_targets(self.net, self.cache.inputs[0], y)
        r = f - y
        return mse_loss(f, y), vjp(self.net, self.params0, self.cache, r / len(r))


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


@dataclass(frozen=True)
class TrainState:
    """The network and its linearisation after `step` gradient-descent steps."""

    step: int
    params: Params
    delta_lin: Params
    f_train: np.ndarray
    f_lin_train: np.ndarray
    loss: float
    loss_lin: float
    diverged: bool
    # the largest loss of each model over every GD step so far, this one included (a catapult's
    # spike can fall between log steps); NaN/inf once a loss was
    loss_max: float = math.nan
    loss_lin_max: float = math.nan


def gd_trajectory(
    net: MLP,
    params0: Params,
    x: np.ndarray,
    y: np.ndarray,
    lr: float,
    steps: int,
    log_steps: Iterable[int],
    *,
    backend: str = "auto",
) -> Iterator[TrainState]:
    """Train the network and its linearisation side by side by full-batch GD (eqs. 2-3).

    Yields the state at every step in `log_steps` (0 = init, up to `steps`). If the network's
    loss becomes NaN or infinite, yields that state with `diverged=True` and stops.
    The effective learning rate is `lr * net.lr_scale`.

    `backend`: "numpy" (the reference: one NumPy operation at a time), "fused" (a compiled
    kernel that streams over the parameters once per step; one hidden layer only) or "auto"
    (fused where it applies, see `use_fused`). The two agree to rounding (~1e-13 relative in
    float64); a given network, data and backend always give bit-identical results.
    """
    check_positive("lr", lr)
    _check_choice("backend", backend, BACKENDS)
    _check_int("steps", steps, 1)
    log = set(int(s) for s in log_steps)
    if not log or min(log) < 0 or max(log) > steps:
        raise ValueError(f"log_steps must be a non-empty set of steps in [0, {steps}]")
    x = as_inputs(net, x)
    y = _as_targets(net, x, y)
    lr_eff = lr * net.lr_scale
    lin = Linearization(net, params0, x)
    if use_fused(net, backend):
        yield from _fused_trajectory(net, params0, x, y, lr_eff, steps, log, lin)
        return
    params, delta = params0, zeros_like(params0)
    loss_max = loss_lin_max = -math.inf
    for step in range(steps + 1):
        # overflow on the way to a divergence is expected: it is detected and reported below
        with np.errstate(over="ignore", invalid="ignore"):
            cache = forward_cache(net, params, x)
            f = lin.centre(cache.f)
            r = f - y
            loss = float(r @ r) / (2 * len(r))
            f_lin = lin.predict(delta)
            r_lin = f_lin - y
            loss_lin = float(r_lin @ r_lin) / (2 * len(r_lin))
        loss_max, loss_lin_max = _running_max(loss_max, loss), _running_max(loss_lin_max, loss_lin)
        diverged = not math.isfinite(loss)
        if step in log or diverged:
            yield TrainState(
                step, params, delta, f, f_lin, loss, loss_lin, diverged, loss_max, loss_lin_max
            )
        if diverged or step == steps:
            return
        with np.errstate(over="ignore", invalid="ignore"):
            params = sgd_update(params, vjp(net, params, cache, r / len(r)), lr_eff)
            delta = sgd_update(delta, vjp(net, params0, lin.cache, r_lin / len(r_lin)), lr_eff)


def _running_max(best: float, value: float) -> float:
    """max(best, value), NaN once either is NaN (Python's max would keep whichever came first)."""
    return best if math.isnan(best) or value <= best else value


BACKENDS = ("auto", "numpy", "fused")


def fused_available() -> bool:
    """Whether the compiled kernels (numba) can be imported."""
    try:
        import ntk_sweep._fused  # noqa: F401
    except ImportError:
        return False
    return True


def use_fused(net: MLP, backend: str = "auto") -> bool:
    """Whether `gd_trajectory` takes the fused path: always for backend "fused" (which requires
    one hidden layer and numba), never for "numpy"; for "auto" where the network has one hidden
    layer and numba is installed (measured faster at every input size and sample count tried,
    benchmarks/README.md). Deeper networks are bound by matrix products, which BLAS does best.
    The choice depends only on the configuration, so a run always takes the same path.
    """
    if backend == "numpy":
        return False
    if backend == "fused":
        if net.depth != 1:
            raise ValueError(f"backend='fused' needs depth=1 (got depth={net.depth}): use numpy")
        if not fused_available():
            raise ValueError("backend='fused' needs numba, which is not installed")
        return True
    return net.depth == 1 and fused_available()


FUSED_PARALLEL_WORK = 2**24
"""Fused steps with at least this much work (`_fused_work`; ~10 ms on one core) share their
blocks between threads; smaller ones run on one thread, which is nearly as fast when the step
is bound by memory bandwidth and much faster when other processes compete for the cores (a
thread waiting for a descheduled sibling costs milliseconds). The result is the same either way.
Set it to 0 to always use threads (benchmarks/bench_train_step.py measures both)."""


def _fused_work(net: MLP, n_samples: int) -> int:
    """Rough cost of a fused step in relu-unit-sample equivalents (a transcendental ~ 8)."""
    per_unit = -(-n_samples // 4) * 4 * net.input_dim
    return net.width * per_unit * (1 if net.activation in ("relu", "linear") else 8)


def _fused_block(input_dim: int) -> int:
    """Units per block of the fused step: its scratch (input_dim + 3 rows) stays in L1/L2."""
    return max(64, min(2048, 16384 // input_dim)) // 16 * 16


def _fused_step_kernel(net: MLP, n_samples: int):
    """The compiled GD step `_fused_trajectory` uses: threaded for large steps (see
    FUSED_PARALLEL_WORK), single-threaded otherwise."""
    from ntk_sweep import _fused

    n_blocks = -(-net.width // _fused_block(net.input_dim))
    parallel = n_blocks > 1 and _fused_work(net, n_samples) >= FUSED_PARALLEL_WORK
    return _fused.depth1_gd_step_parallel if parallel else _fused.depth1_gd_step_serial


def fused_compile_pending(net: MLP, n_samples: int, backend: str = "auto") -> bool:
    """Whether `gd_trajectory` takes the fused path and its compiled step is not loaded in this
    process yet: its first GD step then compiles it (~20 s the first time on a machine) or
    loads it from numba's disk cache. Reads the dispatcher's public `signatures` list."""
    if not use_fused(net, backend):
        return False
    return not _fused_step_kernel(net, n_samples).signatures


def _fused_trajectory(
    net: MLP,
    params0: Params,
    x: np.ndarray,
    y: np.ndarray,
    lr_eff: float,
    steps: int,
    log: set[int],
    lin: Linearization,
) -> Iterator[TrainState]:
    """`gd_trajectory` for one hidden layer: the network through `_fused.depth1_gd_step_*`
    (gradient, in-place update and the next forward pass in one sweep over the parameters), the
    linearised model in the span of its Jacobian's rows.

    The linear model's update `delta -= lr J0^T r_lin / N` keeps `delta = J0^T a` with
    `a -= lr r_lin / N` (`coef`, in R^N, starting at 0), so
    `f_lin = f0 + J0 delta = f0 + K0 a` with `K0 = J0 J0^T` the empirical NTK at theta0:
    exactly the same iteration, O(N^2) per step instead of two passes over the parameters.
    `delta` itself is formed (one VJP) at logged steps only.
    """
    from ntk_sweep import _fused
    from ntk_sweep.kernels import empirical_ntk

    dt = np.dtype(net.dtype).type
    (w_0, b_0), (w1_0, b1_0) = params0
    # working copies, updated in place; states yielded to the caller get their own copies
    w, b, w1m, b1 = (np.array(a, order="C") for a in (w_0, b_0, w1_0, b1_0))
    hidden = (w, b, w1m[:, 0])
    c0, c1, lr_eff = (dt(v) for v in (*net.multipliers, lr_eff))
    cb1 = dt(net.bias_multipliers[1])
    tag = _fused.ACTIVATION_TAGS[net.activation]
    x = np.ascontiguousarray(x)
    n_samples = len(x)
    n_blocks = -(-net.width // _fused_block(net.input_dim))
    kernel = _fused_step_kernel(net, n_samples)
    f_parts = np.empty((n_blocks, n_samples))

    k0 = empirical_ntk(net, params0, x).astype(np.float64)
    f0 = lin.f0.astype(np.float64)
    coef = np.zeros(n_samples)
    loss_max = loss_lin_max = -math.inf
    f_net, f_lin = lin.cache.f.copy(), lin.f0.copy()  # the network's raw output, the linear model's
    for step in range(steps + 1):
        with np.errstate(over="ignore", invalid="ignore"):
            f = lin.centre(f_net)
            r, r_lin = f - y, f_lin - y
            loss = float(r @ r) / (2 * n_samples)
            loss_lin = float(r_lin @ r_lin) / (2 * n_samples)
        loss_max, loss_lin_max = _running_max(loss_max, loss), _running_max(loss_lin_max, loss_lin)
        diverged = not math.isfinite(loss)
        if step in log or diverged:
            params = [(w.copy(), b.copy()), (w1m.copy(), b1.copy())]
            with np.errstate(over="ignore", invalid="ignore"):
                delta = vjp(net, params0, lin.cache, coef)
            yield TrainState(
                step, params, delta, f, f_lin, loss, loss_lin, diverged, loss_max, loss_lin_max
            )
        if diverged or step == steps:
            return
        with np.errstate(over="ignore", invalid="ignore"):
            r = r / n_samples
            kernel(x, r, hidden, tag, c0, c1, lr_eff, f_parts)
            b1 -= lr_eff * (cb1 * r.sum())
            f_net = (c1 * f_parts.sum(axis=0)).astype(net.dtype) + cb1 * b1[0]
            coef -= float(lr_eff) * (r_lin.astype(np.float64) / n_samples)
            f_lin = (f0 + k0 @ coef).astype(net.dtype)
