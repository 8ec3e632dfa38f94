"""Neural tangent kernels: empirical (MATH.md section 2), infinite-width (section 3), and the
measures of how much a kernel moved (section 5). Pure functions of inputs and parameters."""

from __future__ import annotations

import math

import numpy as np

from ntk_sweep.core.checks import check_choice
from ntk_sweep.core.network import (
    BACKENDS,
    MLP,
    Params,
    as_inputs,
    fused_available,
    phi,
    phi_prime,
)

# Bytes one (N x chunk) work array may take in `empirical_ntk`; a handful are alive at once.
CHUNK_BYTES = 32 * 2**20
# Largest fan-in for which `empirical_ntk` forms the pre-activations in the fused kernel (a
# matrix product with so few terms runs at a fraction of BLAS's peak); above, BLAS forms them.
_FUSED_MAX_FAN_IN = 64


def _forward_hidden(
    net: MLP, params: Params, x: np.ndarray, frozen: list[np.ndarray] | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Inputs of weight layers 1..depth (x and the first depth-1 hidden activations) and the
    slopes phi'(z) of hidden layers 1..depth-1 (the last hidden layer is done in chunks), or
    the `frozen` slopes given for them (`empirical_ntk(..., slopes=)`)."""
    c = net.multipliers
    inputs, slopes = [x], []
    for l in range(net.depth - 1):
        w, b = params[l]
        z = inputs[-1] @ w
        z *= c[l]
        z += b
        slopes.append(phi_prime(net.activation, z) if frozen is None else frozen[l])
        inputs.append(phi(net.activation, z))
    return inputs, slopes


def _features_numpy(net, h, w, b, c, scale, slope=None):
    """(phi(z), scale * phi'(z)) for `z = c h @ w + b` (the reference for `_features_fused`);
    `slope`: these units' frozen phi' in place of phi'(z)."""
    z = h @ w
    z *= c
    z += b
    g = phi_prime(net.activation, z) if slope is None else slope.astype(net.dtype)
    g *= scale
    return phi(net.activation, z), g


def _features_fused(net, h, w, j0, k, b, c, scale, buffers):
    """`_features_numpy` for the units j0 .. j0 + k of a layer (w, b, scale: the whole layer's)
    through the compiled kernels: one pass, no temporaries. `buffers`: two flat arrays of at
    least N k values, reused from chunk to chunk (fresh pages cost as much as the kernel)."""
    from ntk_sweep.core import _fused

    dt = np.dtype(net.dtype).type
    tag = _fused.ACTIVATION_TAGS[net.activation]
    # threads pay off only for the transcendental activations (see training.FUSED_PARALLEL_WORK)
    parallel = net.activation in ("erf", "tanh") and len(h) * k >= 2**18
    a = buffers[0][: len(h) * k].reshape(len(h), k)
    g = buffers[1][: len(h) * k].reshape(len(h), k)
    if h.shape[1] <= _FUSED_MAX_FAN_IN:
        kernel = _fused.hidden_features_parallel if parallel else _fused.hidden_features_serial
        kernel(np.ascontiguousarray(h), w, j0, b, dt(c), scale, tag, a, g)
    else:
        np.matmul(h, w[:, j0 : j0 + k], out=a)
        kernel = _fused.activate_parallel if parallel else _fused.activate_serial
        kernel(a, j0, b, dt(c), scale, tag, g)
    return a, g


OUTPUT_KERNELS = ("full", "mean")
"""`empirical_ntk(..., outputs=)` for K > 1 outputs: the full (N1 K, N2 K) kernel, or the (N1, N2)
output-averaged kernel `(1/K) sum_a Theta[(i,a),(j,a)]` (equal for K = 1)."""


def ntk_bytes(n1: int, n2: int, outputs: int = 1, kernel: str = "full") -> int:
    """Bytes of one float64 empirical NTK between n1 and n2 inputs of a network with `outputs`
    outputs: `8 n1 n2 K^2` for the full kernel, `8 n1 n2` for the output-averaged one."""
    check_choice("kernel", kernel, OUTPUT_KERNELS)
    k = outputs if kernel == "full" else 1
    return 8 * n1 * k * n2 * k


def output_kernel_within(n1: int, n2: int, outputs: int, budget_bytes: int) -> str:
    """ "full" where the full (n1 K, n2 K) kernel takes at most `budget_bytes`, else "mean"."""
    return "full" if ntk_bytes(n1, n2, outputs, "full") <= budget_bytes else "mean"


def _choose_fused(backend: str) -> bool:
    check_choice("backend", backend, BACKENDS)
    if backend == "fused" and not fused_available():
        raise ValueError("backend='fused' needs numba, which is not installed")
    return backend == "fused" or (backend == "auto" and fused_available())


def by_output(g: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """`G[(i, a), u] = g[i, u] scale[u, a]`, shape (N K, k), sample-major: the gradients of every
    output f_a with respect to k pre-activations, from phi'(z) `g` (N, k) and df_a/dh (k, K)."""
    return (g[:, None, :] * scale.T[None]).reshape(-1, g.shape[1])


def _times_slopes(back: np.ndarray, slopes: np.ndarray, k: int) -> np.ndarray:
    """`back * phi'(z)` for back-propagated gradients (N K, n) and slopes (N, n) (rows i K + a)."""
    if k == 1:
        return back * slopes
    return (back.reshape(len(slopes), k, -1) * slopes[:, None, :]).reshape(back.shape)


def output_gram(g1: np.ndarray, g2: np.ndarray, n1: int, n2: int, k: int, mean: bool) -> np.ndarray:
    """`G G'^T` over the units, per output pair (N1 K, N2 K), or its output average (N1, N2)."""
    if not mean:
        return g1 @ g2.T
    return (g1.reshape(n1, -1) @ g2.reshape(n2, -1).T) / k


def times_inputs(gram: np.ndarray, term: np.ndarray, k: int, mean: bool) -> np.ndarray:
    """Elementwise `gram * term` with the (N1, N2) input term repeated over output pairs (for
    K > 1 in place of `gram`, the caller's own array: no second kernel-sized array)."""
    if mean or k == 1:
        return gram * term
    n1, n2 = term.shape
    gram.reshape(n1, k, n2, k)[...] *= term[:, None, :, None]
    return gram


def _last_hidden_layer(net, params, h1, h2, chunk_size, fused, mean, frozen=None):
    """Sums over the last hidden layer's units, in chunks: `hh = h_L h_L'^T`, the gradient Gram
    `gg` of that layer's pre-activations (per output pair, or its output average when `mean`:
    the unit's `(1/K) sum_a (df_a/dh_u)^2` in place of the K x K products) and, below it, the
    gradients back-propagated to its inputs, (N K, n_{L-1}) each (None for depth 1). `frozen`:
    the layer's phi' to use in place of phi'(z) (NumPy path, h2 None)."""
    same, k_out, L = h2 is None, net.outputs, net.depth
    sides = (h1,) if same else (h1, h2)
    h2 = h1 if same else h2
    n1, n2, c = len(h1), len(h2), net.multipliers
    w_last, b_last = params[L - 1]
    n = w_last.shape[1]
    df_dh = c[L] * params[L][0]  # (n, K): df_a / dh_u of the last hidden layer
    scale = df_dh[:, 0] if k_out == 1 else np.ones(n, dtype=net.dtype)
    rms = np.sqrt(np.mean(df_dh * df_dh, axis=1)) if mean else None  # output-averaged Gram
    if chunk_size is None:
        chunk_size = max(256, CHUNK_BYTES // (8 * max(n1, n2) * k_out))
    hh, gg = np.zeros((n1, n2)), np.zeros((n1 * k_out, n2 * k_out) if not mean else (n1, n2))
    back = [np.zeros((len(h) * k_out, h.shape[1]), net.dtype) for h in (h1, h2)] if L > 1 else None
    if fused:
        chunk_size = min(chunk_size, n)
        bufs = [[np.empty(len(h) * chunk_size, dtype=net.dtype) for _ in range(2)] for h in sides]
    for start in range(0, n, chunk_size):
        sl = slice(start, start + min(chunk_size, n - start))
        feats = []
        for side, h in enumerate(sides):
            if fused:
                args = (net, h, w_last, start, sl.stop - start, b_last, c[L - 1], scale)
                feats.append(_features_fused(*args, bufs[side]))
            else:
                slope = None if frozen is None else frozen[:, sl]
                feats.append(
                    _features_numpy(net, h, w_last[:, sl], b_last[sl], c[L - 1], scale[sl], slope)
                )
        (a1, g1), (a2, g2) = feats[0], feats[-1]
        hh += a1 @ a2.T
        if mean:
            s1 = g1 * rms[sl]
            gg += s1 @ (s1 if same else g2 * rms[sl]).T
        if k_out > 1 and (L > 1 or not mean):
            g1 = by_output(g1, df_dh[sl])
            g2 = g1 if same else by_output(g2, df_dh[sl])
        if not mean:
            gg += g1 @ g2.T
        if L > 1:
            back[0] += g1 @ w_last[:, sl].T
            if not same:
                back[1] += g2 @ w_last[:, sl].T
    if back is not None and same:
        back[1] = back[0]
    return hh, gg, back


def empirical_ntk(
    net: MLP,
    params: Params,
    x1: np.ndarray,
    x2: np.ndarray | None = None,
    chunk_size: int | None = None,
    *,
    backend: str = "auto",
    outputs: str = "full",
    slopes: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Empirical NTK `Theta(x1, x2) = J(x1) J(x2)^T` (paper eq. 6), shape (N1, N2) for one output.

    Layer-wise formula of MATH.md section 2:
    `Theta = sum_l (G_l G_l'^T) * (c_l^2 H_{l-1} H_{l-1}'^T + (c^b_l)^2)`, with `H_{l-1}` the
    inputs of weight layer l, `G_l` the gradients of f with respect to its pre-activations and
    `c_l`, `c^b_l` the layer's weight and bias multipliers (network.py).
    The last hidden layer is processed in chunks of its units, so memory stays
    O(N * (chunk + width)) even at very large width (for depth 1, O(N * chunk)).
    Cost O(N1 N2 * sum of widths) plus the forward and backward passes; for x2 = None the Gram
    matrices are symmetric rank-k updates (`a @ a.T`, BLAS syrk: half the work of a product).

    K = `net.outputs` > 1: `outputs="full"` gives the (N1 K, N2 K) kernel
    `Theta[(i,a),(j,b)] = <df_a(x_i)/dtheta, df_b(x_j)/dtheta>`, sample-major (row i K + a): the
    readout layer contributes `delta_ab (c^2 h h'^T + (c^b)^2)`, each hidden layer the Gram of
    its per-output gradients `G_l[(i,a), u]`, whose cross-output structure comes from the rows
    of W_out (`df_a/dh_u = c W_out[u, a]`). `outputs="mean"` gives the (N1, N2) average of the
    K diagonal blocks at about the cost of one output (depth 1) or K (deeper).
    `ntk_bytes` gives either's size.

    `backend`: "numpy" (the reference), "fused" (the last hidden layer's activations and slopes
    in one compiled pass, numba) or "auto" (fused where numba is installed). They agree to
    rounding; the Gram matrices, the bulk of the work, are BLAS products in both.

    `slopes`: one (N1, width) array per hidden layer, used in the backward pass in place of the
    activation derivatives phi'(z) (the forward activations phi(z) are unchanged): the kernel of
    the parameters with a frozen derivative pattern, e.g. the initial one (docs/metrics.md,
    `kernel_drift_flip`). Only for x2 = None; always the NumPy path.
    """
    if slopes is not None:
        if x2 is not None:
            raise ValueError("slopes= is for the kernel of one input set (x2=None)")
        if len(slopes) != net.depth:
            raise ValueError(f"slopes has {len(slopes)} layers: expected depth={net.depth}")
        backend = "numpy"
    fused = _choose_fused(backend)
    check_choice("outputs", outputs, OUTPUT_KERNELS)
    mean, k_out = outputs == "mean" and net.outputs > 1, net.outputs
    x1 = as_inputs(net, x1)
    same = x2 is None
    x2 = x1 if same else as_inputs(net, x2)
    n1, n2 = len(x1), len(x2)
    c, cb = net.multipliers, net.bias_multipliers
    L = net.depth  # index of the last hidden weight layer is L-1 (0-based); output is L
    ins1, slopes1 = _forward_hidden(net, params, x1, slopes)
    ins2, slopes2 = (ins1, slopes1) if same else _forward_hidden(net, params, x2)
    h1, h2 = ins1[-1], ins2[-1]  # inputs of the last hidden layer
    hh_out, gg_last, back = _last_hidden_layer(
        net,
        params,
        h1,
        None if same else h2,
        chunk_size,
        fused,
        mean,
        None if slopes is None else slopes[-1],
    )
    ntk = c[L] ** 2 * hh_out
    ntk += cb[L] ** 2
    if k_out > 1 and not mean:
        ntk = kron_outputs(ntk, k_out)  # the readout: delta_ab
    ntk += times_inputs(gg_last, c[L - 1] ** 2 * (h1 @ h2.T) + cb[L - 1] ** 2, k_out, mean)
    if L > 1:
        back1, back2 = back
        # walk down the remaining layers l = L-2 .. 0 (0-based weight-layer index)
        for l in range(L - 2, -1, -1):
            g1 = _times_slopes(back1, slopes1[l], k_out)
            g1 *= c[l + 1]
            if same:
                g2 = g1
            else:
                g2 = _times_slopes(back2, slopes2[l], k_out)
                g2 *= c[l + 1]
            term = c[l] ** 2 * (ins1[l] @ ins2[l].T) + cb[l] ** 2
            ntk += times_inputs(output_gram(g1, g2, n1, n2, k_out, mean), term, k_out, mean)
            if l > 0:
                w = params[l][0]
                back1 = g1 @ w.T
                back2 = back1 if same else g2 @ w.T
    return ntk


# Taylor coefficients of `sin t - t cos t = sum_{n >= 1} (-1)^(n+1) 2n t^(2n+1) / (2n+1)!`; ten
# terms leave a remainder below 1e-18 relative for t <= 1, where the series replaces the direct form
_SIN_MINUS_T_COS = tuple((-1) ** (n + 1) * 2 * n / math.factorial(2 * n + 1) for n in range(1, 11))
# Veltkamp's splitting constant for float64: `_two_product` splits each factor into 26-bit halves
_SPLITTER = 2.0**27 + 1


def _sin_minus_t_cos(t: np.ndarray) -> np.ndarray:
    """`sin t - t cos t` for t in [0, pi/2] to full relative precision: below t = 1 the two terms
    cancel (the difference is ~t^3 / 3), so the Taylor series is used there."""
    t2 = t * t
    series = np.zeros_like(t)
    for coef in reversed(_SIN_MINUS_T_COS):
        series = series * t2 + coef
    return np.where(t < 1, series * t2 * t, np.sin(t) - t * np.cos(t))


def _relu_expectations(
    s11: np.ndarray, s22: np.ndarray, s12: np.ndarray, det: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The arc-cosine expectations of MATH.md section 3 for relu, written so that no step cancels.

    With `theta` the angle of the covariance (`cos theta = rho`), `J = sin theta + (pi - theta)
    cos theta` and `k = J / pi`: `E[phi phi] = sqrt(s11 s22) J / (2 pi)` (MATH.md's form, as
    `sqrt(s11 s22) sqrt(1 - rho^2) = sqrt(det)`), `E[phi' phi'] = (pi - theta) / (2 pi)`. The
    angle comes from atan2 of the accurate sine `sqrt(det)` and cosine `|s12|`; for an obtuse
    angle it is measured from -v (`t = pi - theta`), where `J = sin t - t cos t` cancels and is
    taken from `_sin_minus_t_cos`. Also returns the determinant `s11 s22 (1 - k^2) / 4` and the
    `E[(phi(u) - phi(v))^2] = ((sqrt(s11) - sqrt(s22))^2 + 2 sqrt(s11 s22) (1 - k)) / 2` of the
    features' second moments, with `1 - k = 2 sin^2(theta / 2) - m(theta) / pi` for an acute
    angle (`m = sin t - t cos t`; the second term is at most half the first: no cancellation)
    and `1 - k = 1 - m(t) / pi` for an obtuse one.
    """
    root, norm = np.sqrt(det), np.sqrt(s11 * s22)
    obtuse = s12 < 0
    t = np.arctan2(root, np.abs(s12))  # theta, or pi - theta when obtuse: in [0, pi/2]
    m = _sin_minus_t_cos(t)
    outer = np.where(obtuse, t, np.pi - t)  # pi - theta
    e_phi = np.where(obtuse, norm * m, root + outer * s12) / (2 * np.pi)
    # an input with zero pre-activation variance has relu'(0) = 0
    e_dphi = np.where(norm > 0, outer / (2 * np.pi), 0.0)
    one_minus_k = np.where(obtuse, 1 - m / np.pi, 2 * np.sin(t / 2) ** 2 - m / np.pi)
    moment_det = s11 * s22 * one_minus_k * (2 - one_minus_k) / 4
    # sqrt(s11) - sqrt(s22) from s11 - s22, which is exact when they are close
    sum_roots = np.sqrt(s11) + np.sqrt(s22)
    root_gap = np.divide(s11 - s22, sum_roots, out=np.zeros_like(norm), where=sum_roots > 0)
    moment_dist = (root_gap**2 + 2 * norm * one_minus_k) / 2
    return e_phi, e_dphi, moment_det, moment_dist


def _gaussian_expectations(
    activation: str, s11: np.ndarray, s22: np.ndarray, s12: np.ndarray, det: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`E[phi(u) phi(v)]`, `E[phi'(u) phi'(v)]` for (u, v) ~ N(0, [[s11, s12], [s12, s22]])
    (MATH.md section 3), given `det = s11 s22 - s12^2 >= 0`, and the determinant and
    `E[(phi(u) - phi(v))^2]` of the features' second-moment matrix, from which
    `analytic_kernels` carries the next layer's determinant.

    Only relu needs the determinant to full relative precision (its angle is ~sqrt(det), see
    `_relu_expectations`). erf and linear use it at most added to order-one terms
    (`(1 + 2 s11)(1 + 2 s22) - 4 s12^2 = 1 + 2 s11 + 2 s22 + 4 det`), where the direct
    difference of products is accurate enough.
    """
    if activation == "relu":
        return _relu_expectations(s11, s22, s12, det)
    if activation == "linear":
        return s12, np.ones_like(s12), det, s11 + s22 - 2 * s12
    if activation == "erf":
        a, b = 1 + 2 * s11, 1 + 2 * s22
        e_phi = (2 / np.pi) * np.arcsin(np.clip(2 * s12 / np.sqrt(a * b), -1, 1))
        e_dphi = (4 / np.pi) / np.sqrt(1 + 2 * s11 + 2 * s22 + 4 * det)
        # E[phi(u)^2], E[phi(v)^2] by the same formula as for identical inputs
        e11 = (2 / np.pi) * np.arcsin(2 * s11 / a)
        e22 = (2 / np.pi) * np.arcsin(2 * s22 / b)
        moment_det = np.maximum(e11 * e22 - e_phi**2, 0.0)
        return e_phi, e_dphi, moment_det, np.maximum(e11 + e22 - 2 * e_phi, 0.0)
    raise AssertionError(activation)


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`a = hi + lo` exactly with `hi`, `lo` of at most 26 significant bits (Veltkamp)."""
    t = _SPLITTER * a
    hi = t - (t - a)
    return hi, a - hi


def _two_product(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(p, e)` with `p = fl(a b)` and `a b = p + e` exactly (Dekker's product, no FMA needed)."""
    p = a * b
    (ah, al), (bh, bl) = _split(a), _split(b)
    e = ah * bh - p
    e += ah * bl
    e += al * bh
    e += al * bl
    return p, e


def _identical_rows(x1: np.ndarray, x2: np.ndarray) -> np.ndarray:
    """(N1, N2) mask of the pairs of bit-identical inputs."""
    return np.array([np.all(x2 == xi, axis=1) for xi in x1]).reshape(len(x1), len(x2))


def _gram_determinant(x1: np.ndarray, x2: np.ndarray, scale: float, shift: float) -> np.ndarray:
    """`s11 s22 - s12^2` of the first-layer covariance `s = scale * x.x' + shift`, without
    cancellation: `scale^2 (|x|^2 |x'|^2 - (x.x')^2) + scale shift |x - x'|^2`, the first term
    written as `|x|^2 |x' - c x|^2` with `c = x.x' / |x|^2` (0 in one dimension).

    The residual `x' - c x` is formed with the exact product `c x` (`_two_product`), so it is
    accurate to rounding even when x' is within 1e-8 of the line through x (either direction).
    `c` itself is only rounded: its error adds `(c - c*)^2 |x|^4`, second order, to the result.
    """
    n1 = np.einsum("ij,ij->i", x1, x1)
    det = np.empty((len(x1), len(x2)))
    for i, (xi, ni) in enumerate(zip(x1, n1, strict=True)):
        gap = x2 - xi
        det[i] = scale * shift * np.einsum("ij,ij->i", gap, gap)
        if x1.shape[1] > 1 and ni > 0:
            coef = (x2 @ xi) / ni
            p, e = _two_product(coef[:, None], xi[None, :])
            residual = np.subtract(x2, p, out=p)
            residual -= e
            det[i] += scale**2 * ni * np.einsum("ij,ij->i", residual, residual)
    return det


ANALYTIC_ACTIVATIONS = ("relu", "erf", "linear")


def has_analytic_ntk(net: MLP) -> bool:
    """Whether `analytic_ntk` has a closed form for this network."""
    return net.activation in ANALYTIC_ACTIVATIONS and net.parameterization == "ntk"


def check_analytic(net: MLP) -> None:
    """Raise ValueError where no closed-form infinite-width kernel exists."""
    if net.activation not in ANALYTIC_ACTIVATIONS:
        raise ValueError(
            f"activation={net.activation!r} has no closed-form infinite-width kernel: "
            f"allowed values are {', '.join(ANALYTIC_ACTIVATIONS)}"
        )
    if net.parameterization != "ntk":
        raise ValueError(
            f"parameterization={net.parameterization!r} has no infinite-width NTK "
            "(it diverges for standard and is not constant for mean_field): allowed value is ntk"
        )


def analytic_kernels(
    net: MLP, x1: np.ndarray, x2: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Infinite-width NNGP `Sigma^{L+1}` and NTK `Theta^{L+1}` (MATH.md section 3, the paper's
    eq. 21 generalised to any depth, sigma_w, sigma_b and input dimension).

    `Sigma^1 = sigma_w^2 x.x'/d + sigma_b^2`, `Theta^1 = sigma_w^2 x.x'/d + 1`, then per layer
    `Sigma^{l+1} = sigma_w^2 E[phi phi] + sigma_b^2` and
    `Theta^{l+1} = sigma_w^2 E[phi phi] + 1 + sigma_w^2 E[phi' phi'] Theta^l`.
    Computed in float64 whatever the network's dtype, to ~1e-15 relative (erf and linear: up to
    the cancellation in sums of terms of opposite sign), nearly collinear inputs included: the
    determinant `Sigma_11 Sigma_22 - Sigma_12^2` of each pair is carried by its own recursion,
    `det^{l+1} = sigma_w^4 det M + sigma_w^2 sigma_b^2 (M_11 + M_22 - 2 M_12)` with `M` the
    features' second moments (`_gaussian_expectations`), and bit-identical inputs get exactly
    the values of one input alone.
    """
    check_analytic(net)
    same = x2 is None
    x1 = as_inputs(net, x1).astype(np.float64)
    x2 = x1 if same else as_inputs(net, x2).astype(np.float64)
    sw2, sb2, d = net.sigma_w**2, net.sigma_b**2, net.input_dim
    sq1 = np.einsum("ij,ij->i", x1, x1) / d
    sq2 = sq1 if same else np.einsum("ij,ij->i", x2, x2) / d
    # A pair of identical inputs takes its squared norm for the dot product and a zero
    # determinant, so Theta(x, x) comes out bit for bit as for x alone, whatever the batch.
    identical = _identical_rows(x1, x2)
    dot12 = np.where(identical, sq1[:, None], x1 @ x2.T / d)
    # diagonal variances of each input set, carried through the recursion alongside the cross term
    v1, v2 = sw2 * sq1 + sb2, sw2 * sq2 + sb2
    sigma = sw2 * dot12 + sb2
    theta = sw2 * dot12 + 1.0
    # det = s11 s22 - s12^2 has its own recursion: formed as that difference from layer 2 on, it
    # would cancel to an absolute error ~1e-16 s11 s22, and relu's angle ~sqrt(det) to ~1e-8
    det = np.where(identical, 0.0, _gram_determinant(x1, x2, sw2 / d, sb2))
    for _ in range(net.depth):
        s11, s22 = v1[:, None], v2[None, :]
        e_phi, e_dphi, moment_det, moment_dist = _gaussian_expectations(
            net.activation, s11, s22, sigma, det
        )
        theta = sw2 * e_phi + 1.0 + sw2 * e_dphi * theta
        sigma = sw2 * e_phi + sb2
        # det(sw2 M + sb2 [[1, 1], [1, 1]]) for the features' second-moment matrix M
        det = sw2**2 * moment_det + sw2 * sb2 * moment_dist
        zero = np.zeros_like(v1)
        v1 = sw2 * _gaussian_expectations(net.activation, v1, v1, v1, zero)[0] + sb2
        zero = np.zeros_like(v2)
        v2 = sw2 * _gaussian_expectations(net.activation, v2, v2, v2, zero)[0] + sb2
    return sigma, theta


def analytic_ntk(net: MLP, x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:
    """Infinite-width NTK, shape (N1, N2); see `analytic_kernels` (times `alpha^2` for the
    centred model: its NTK is that of `alpha f_net`). For K outputs it is the kernel of each
    output: the full infinite-width kernel is `kron_outputs(analytic_ntk(...), K)`, the output
    pairs a != b decouple."""
    theta = analytic_kernels(net, x1, x2)[1]
    return theta * float(net.alpha) ** 2 if net.centred else theta


def kron_outputs(k: np.ndarray, outputs: int) -> np.ndarray:
    """`k (x) I_K`, sample-major ((N1 K, N2 K), entry ((i,a),(j,b)) = k_ij delta_ab): a
    per-output kernel as the full kernel of K outputs (`empirical_ntk`'s order)."""
    out = np.zeros((k.shape[0] * outputs, k.shape[1] * outputs), dtype=k.dtype)
    blocks = out.reshape(k.shape[0], outputs, k.shape[1], outputs)
    for a in range(outputs):
        blocks[:, a, :, a] = k
    return out


def analytic_nngp(net: MLP, x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:
    """Infinite-width NNGP kernel (covariance of f at init), shape (N1, N2). For the centred
    model, the covariance of `alpha f_net` before centring (the centred output is 0 at init)."""
    sigma = analytic_kernels(net, x1, x2)[0]
    return sigma * float(net.alpha) ** 2 if net.centred else sigma


def relative_difference(k: np.ndarray, k_ref: np.ndarray) -> float:
    """`||k - k_ref||_F / ||k_ref||_F`."""
    return float(np.linalg.norm(k - k_ref) / np.linalg.norm(k_ref))


def kernel_drift(k_t: np.ndarray, k_0: np.ndarray) -> float:
    """Kernel drift `||Theta_t - Theta_0||_F / ||Theta_0||_F` (MATH.md section 5). Any kernel
    shape: the full (N K, N K) or the output-averaged (N, N) one for K outputs."""
    return relative_difference(k_t, k_0)


def kernel_distance(k_t: np.ndarray, k_0: np.ndarray) -> float:
    """Kernel distance `1 - <Theta_t, Theta_0>_F / (||Theta_t|| ||Theta_0||)` (MATH.md s. 5).

    Insensitive to a global rescaling of the kernel; 0 for identical kernels. Any kernel shape
    (full or output-averaged for K outputs).
    """
    k_t, k_0 = np.asarray(k_t, dtype=np.float64), np.asarray(k_0, dtype=np.float64)
    # 1 - cos = |u - v|^2 / 2 for unit u, v: no cancellation when the kernels are close
    gap = k_t / np.linalg.norm(k_t) - k_0 / np.linalg.norm(k_0)
    return float(np.vdot(gap, gap)) / 2


def kernel_target_alignment(k: np.ndarray, y: np.ndarray) -> float:
    """Kernel-target alignment `y^T Theta y / (||Theta||_F ||y||^2)` (Cristianini et al. 2001;
    Baratin et al. 2021 follow it along training): `<Theta, y y^T>_F` over the two Frobenius
    norms, so in [-1, 1], invariant to rescaling the kernel or the targets; NaN for y = 0.

    (N, K) targets: with the full (N K, N K) kernel, y flattened sample-major; with an (N, N)
    kernel (e.g. the output-averaged one), the alignment with `Y Y^T`,
    `tr(Y^T Theta Y) / (||Theta||_F ||Y Y^T||_F)` (the same formula for K = 1)."""
    k = np.asarray(k, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 2 and k.shape == (len(y), len(y)) and y.shape[1] > 1:
        yy = float(np.linalg.norm(y.T @ y))  # ||Y Y^T||_F = ||Y^T Y||_F, a K x K matrix
        if yy == 0:
            return float("nan")
        return float(np.vdot(y, k @ y)) / (float(np.linalg.norm(k)) * yy)
    y = y.reshape(-1)
    if k.shape != (len(y), len(y)):
        raise ValueError(
            f"kernel has shape {k.shape}: expected ({len(y)}, {len(y)}) for y, or "
            "(N, N) for y of shape (N, K)"
        )
    yy = float(y @ y)
    if yy == 0:
        return float("nan")
    return float(y @ k @ y) / (float(np.linalg.norm(k)) * yy)


def kernel_velocity(k_t: np.ndarray, k_prev: np.ndarray, k_0: np.ndarray, dt: float) -> float:
    """Kernel velocity (Fort et al. 2020) between two logged kernels:
    `||Theta_t - Theta_prev||_F / ||Theta_0||_F / dt`, the relative kernel change per unit of
    training time `dt` (> 0) between them; 0 for a constant kernel. Any kernel shape."""
    if not dt > 0:
        raise ValueError(f"dt={dt!r} is invalid: expected a number > 0")
    step = np.asarray(k_t, dtype=np.float64) - np.asarray(k_prev, dtype=np.float64)
    return float(np.linalg.norm(step) / np.linalg.norm(np.asarray(k_0, dtype=np.float64))) / dt
