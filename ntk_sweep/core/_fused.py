"""Fused numba kernels for the two hot loops: a gradient-descent step of a one-hidden-layer
network together with its linearisation, and the hidden-layer features of the empirical NTK.

Imported lazily by network.py and kernels.py (numba's import costs a few tenths of a second),
only where the fused path applies; the NumPy code in those modules is the reference that the
tests compare these kernels with. Compiled code is cached on disk (`cache=True`).

Determinism: every kernel splits the units into blocks whose size depends only on the problem's
shape, reduces within a block in a fixed order and returns one partial sum per block; the caller
adds the partials in NumPy. The result is therefore the same whatever the number of threads.
Floating-point semantics are IEEE except for reassociation (`fastmath={"reassoc", "contract"}`),
which lets LLVM vectorise the reductions: NaN and inf propagate as in NumPy, so divergence is
still detected. The relu kernels return NaN for a NaN pre-activation, as `np.maximum` does.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

ACTIVATION_CODES = {"relu": 0, "erf": 1, "tanh": 2, "linear": 3}
# The kernels take the activation as a tuple whose length is its code plus one: a tuple's length
# is part of its type, so every activation compiles to its own specialisation in which the code
# is a constant and the activation's branches fold away (a runtime integer code would leave a
# branch in every inner loop, which stops LLVM from vectorising them: 5x slower).
ACTIVATION_TAGS = {name: (0,) * (code + 1) for name, code in ACTIVATION_CODES.items()}
_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)
_FASTMATH = {"reassoc", "contract"}


@nb.njit
def _constant(value, like):
    """`value` in the precision of the array `like`."""
    tmp = np.empty(1, dtype=like.dtype)
    tmp[0] = value
    return tmp[0]


@nb.njit
def _phi_and_slope(z, act, zero, one, erf_c):
    """(phi(z), phi'(z)) for activation code `act`, in z's precision (erf_c = 2 / sqrt(pi))."""
    if act == 0:
        return (z if not z <= zero else zero), (one if z > zero else zero)
    if act == 1:
        return math.erf(z), erf_c * math.exp(-(z * z))
    if act == 2:
        t = math.tanh(z)
        return t, one - t * t
    return z, one


@nb.njit
def _phi(z, act, zero):
    if act == 0:
        return z if not z <= zero else zero
    if act == 1:
        return math.erf(z)
    if act == 2:
        return math.tanh(z)
    return z


@nb.njit
def _preactivation(z, x, i, w, b, j0, j1, c):
    """z[:] = c * (x[i] @ w[:, j0:j1]) + b[j0:j1] (the inner loops run over contiguous units)."""
    bb = b[j0:j1]
    if x.shape[1] == 1:
        xc, wk = c * x[i, 0], w[0, j0:j1]
        for j in range(j1 - j0):
            z[j] = xc * wk[j] + bb[j]
        return
    z[:] = 0
    k = 0
    while k + 4 <= x.shape[1]:  # four inputs per pass over z (z stays in registers longer)
        x0, x1, x2, x3 = x[i, k], x[i, k + 1], x[i, k + 2], x[i, k + 3]
        w0, w1, w2, w3 = w[k, j0:j1], w[k + 1, j0:j1], w[k + 2, j0:j1], w[k + 3, j0:j1]
        for j in range(j1 - j0):
            z[j] += x0 * w0[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j]
        k += 4
    while k < x.shape[1]:
        xk, wk = x[i, k], w[k, j0:j1]
        for j in range(j1 - j0):
            z[j] += xk * wk[j]
        k += 1
    for j in range(j1 - j0):
        z[j] = c * z[j] + bb[j]


@nb.njit
def _step_block(q, x, r, params, act, c0, c1, lr, f_parts):
    """Units q * block .. (q + 1) * block of `depth1_gd_step_serial` (block = ceil(width /
    n_blocks)): the gradient at the current parameters, the update, the forward pass at the new
    ones; every array of the block stays in the L1 cache between the three."""
    w, b, w1 = params
    n_samples, d = x.shape
    block = (w.shape[1] + f_parts.shape[0] - 1) // f_parts.shape[0]
    j0 = q * block
    j1 = min(j0 + block, w.shape[1])
    m = j1 - j0
    zero = c0 - c0
    one = _constant(1.0, w)  # not zero + 1: an int would promote float32 to float64
    erf_c = _constant(_TWO_OVER_SQRT_PI, w)
    # separate allocations: LLVM then knows they do not alias, and vectorises the loops (2x)
    g_w = np.zeros((d, m), dtype=w.dtype)
    g_b = np.zeros(m, dtype=w.dtype)
    g_w1 = np.zeros(m, dtype=w.dtype)
    z = np.empty(m, dtype=w.dtype)
    bb, w1b = b[j0:j1], w1[j0:j1]

    # gradient of sum_i r_i f(x_i), without the factors c0 c1 (W), c1 (b) and c1 (w1)
    for i in range(n_samples):
        _preactivation(z, x, i, w, b, j0, j1, c0)
        ri = r[i]
        for j in range(m):
            hj, sj = _phi_and_slope(z[j], act, zero, one, erf_c)
            g_w1[j] += hj * ri
            dl = ri * w1b[j] * sj  # back-propagated to the pre-activation
            z[j] = dl
            g_b[j] += dl
        for k in range(d):
            xk, gk = x[i, k], g_w[k]
            for j in range(m):
                gk[j] += xk * z[j]

    step_w, step_b = lr * c0 * c1, lr * c1
    for k in range(d):
        wk, gk = w[k, j0:j1], g_w[k]
        for j in range(m):
            wk[j] -= step_w * gk[j]
    for j in range(m):
        bb[j] -= step_b * g_b[j]
        w1b[j] -= step_b * g_w1[j]

    for i in range(n_samples):
        _preactivation(z, x, i, w, b, j0, j1, c0)
        acc = zero
        for j in range(m):
            acc += _phi(z[j], act, zero) * w1b[j]
        f_parts[q, i] = acc


@nb.njit
def _step_block_1d(q, xs, rs, params, act, c0, c1, lr, f_parts):
    """`_step_block` for a one-dimensional input (the paper's network), four samples at a time
    held in registers: one pass over the block for the gradient and one for the update and the
    forward pass when N <= 4 (3x faster than one sample at a time). xs, rs: the inputs and
    residuals padded with zeros to a multiple of 4 samples (a padded sample contributes 0)."""
    w, b, w1 = params
    block = (w.shape[1] + f_parts.shape[0] - 1) // f_parts.shape[0]
    j0 = q * block
    j1 = min(j0 + block, w.shape[1])
    m = j1 - j0
    zero = c0 - c0
    one = _constant(1.0, w)  # not zero + 1: an int would promote float32 to float64
    erf_c = _constant(_TWO_OVER_SQRT_PI, w)
    w0b, bb, w1b = w[0, j0:j1], b[j0:j1], w1[j0:j1]
    step_w, step_b = lr * c0 * c1, lr * c1

    if xs.shape[0] == 4:  # N <= 4: gradient, update and forward pass in one pass (2x faster)
        x_0, x_1, x_2, x_3 = xs[0], xs[1], xs[2], xs[3]
        cx0, cx1, cx2, cx3 = c0 * x_0, c0 * x_1, c0 * x_2, c0 * x_3
        r_0, r_1, r_2, r_3 = rs[0], rs[1], rs[2], rs[3]
        a_0 = a_1 = a_2 = a_3 = zero
        for j in range(m):
            wj, bj, vj = w0b[j], bb[j], w1b[j]
            h_0, s_0 = _phi_and_slope(cx0 * wj + bj, act, zero, one, erf_c)
            h_1, s_1 = _phi_and_slope(cx1 * wj + bj, act, zero, one, erf_c)
            h_2, s_2 = _phi_and_slope(cx2 * wj + bj, act, zero, one, erf_c)
            h_3, s_3 = _phi_and_slope(cx3 * wj + bj, act, zero, one, erf_c)
            d_0, d_1, d_2, d_3 = r_0 * s_0, r_1 * s_1, r_2 * s_2, r_3 * s_3
            wj -= step_w * (vj * (x_0 * d_0 + x_1 * d_1 + x_2 * d_2 + x_3 * d_3))
            bj -= step_b * (vj * (d_0 + d_1 + d_2 + d_3))
            vj -= step_b * (h_0 * r_0 + h_1 * r_1 + h_2 * r_2 + h_3 * r_3)
            w0b[j], bb[j], w1b[j] = wj, bj, vj
            a_0 += _phi(cx0 * wj + bj, act, zero) * vj
            a_1 += _phi(cx1 * wj + bj, act, zero) * vj
            a_2 += _phi(cx2 * wj + bj, act, zero) * vj
            a_3 += _phi(cx3 * wj + bj, act, zero) * vj
        _store4(f_parts, q, 0, a_0, a_1, a_2, a_3)
        return

    # gradient of sum_i r_i f(x_i), without the factors c0 c1 (W), c1 (b) and c1 (w1)
    g_w = np.zeros(m, dtype=w.dtype)
    g_b = np.zeros(m, dtype=w.dtype)
    g_w1 = np.zeros(m, dtype=w.dtype)
    for i0 in range(0, xs.shape[0], 4):
        x_0, x_1, x_2, x_3 = xs[i0], xs[i0 + 1], xs[i0 + 2], xs[i0 + 3]
        cx0, cx1, cx2, cx3 = c0 * x_0, c0 * x_1, c0 * x_2, c0 * x_3
        r_0, r_1, r_2, r_3 = rs[i0], rs[i0 + 1], rs[i0 + 2], rs[i0 + 3]
        for j in range(m):
            wj, bj = w0b[j], bb[j]
            h_0, s_0 = _phi_and_slope(cx0 * wj + bj, act, zero, one, erf_c)
            h_1, s_1 = _phi_and_slope(cx1 * wj + bj, act, zero, one, erf_c)
            h_2, s_2 = _phi_and_slope(cx2 * wj + bj, act, zero, one, erf_c)
            h_3, s_3 = _phi_and_slope(cx3 * wj + bj, act, zero, one, erf_c)
            g_w1[j] += h_0 * r_0 + h_1 * r_1 + h_2 * r_2 + h_3 * r_3
            # back-propagated to the pre-activations: r_i w1_j phi'(z_ij)
            d_0, d_1, d_2, d_3 = r_0 * s_0, r_1 * s_1, r_2 * s_2, r_3 * s_3
            g_b[j] += w1b[j] * (d_0 + d_1 + d_2 + d_3)
            g_w[j] += w1b[j] * (x_0 * d_0 + x_1 * d_1 + x_2 * d_2 + x_3 * d_3)

    for i0 in range(0, xs.shape[0], 4):
        cx0, cx1, cx2, cx3 = c0 * xs[i0], c0 * xs[i0 + 1], c0 * xs[i0 + 2], c0 * xs[i0 + 3]
        a_0 = a_1 = a_2 = a_3 = zero
        if i0 == 0:  # the update, fused with the first forward pass
            for j in range(m):
                wj = w0b[j] - step_w * g_w[j]
                bj = bb[j] - step_b * g_b[j]
                vj = w1b[j] - step_b * g_w1[j]
                w0b[j], bb[j], w1b[j] = wj, bj, vj
                a_0 += _phi(cx0 * wj + bj, act, zero) * vj
                a_1 += _phi(cx1 * wj + bj, act, zero) * vj
                a_2 += _phi(cx2 * wj + bj, act, zero) * vj
                a_3 += _phi(cx3 * wj + bj, act, zero) * vj
        else:
            for j in range(m):
                wj, bj, vj = w0b[j], bb[j], w1b[j]
                a_0 += _phi(cx0 * wj + bj, act, zero) * vj
                a_1 += _phi(cx1 * wj + bj, act, zero) * vj
                a_2 += _phi(cx2 * wj + bj, act, zero) * vj
                a_3 += _phi(cx3 * wj + bj, act, zero) * vj
        _store4(f_parts, q, i0, a_0, a_1, a_2, a_3)


@nb.njit
def _store4(f_parts, q, i0, a_0, a_1, a_2, a_3):
    """f_parts[q, i0:i0 + 4] = a_0 .. a_3, dropping the padded samples."""
    n = f_parts.shape[1]
    f_parts[q, i0] = a_0
    if i0 + 1 < n:
        f_parts[q, i0 + 1] = a_1
    if i0 + 2 < n:
        f_parts[q, i0 + 2] = a_2
    if i0 + 3 < n:
        f_parts[q, i0 + 3] = a_3


@nb.njit
def _padded(x, r):
    """A one-dimensional input and its residuals padded with zeros to a multiple of 4."""
    n_pad = (x.shape[0] + 3) // 4 * 4
    xs = np.zeros(n_pad, dtype=x.dtype)
    rs = np.zeros(n_pad, dtype=r.dtype)
    xs[: x.shape[0]] = x[:, 0]
    rs[: r.shape[0]] = r
    return xs, rs


@nb.njit(cache=True, fastmath=_FASTMATH)
def depth1_gd_step_serial(x, r, params, tag, c0, c1, lr, f_parts):
    """One full-batch GD step of `f = c1 phi(c0 x W + b) w1 + cb1 b1`, in place, followed by the
    forward pass at the new parameters.

    `params = (W (d, n), b (n,), w1 (n,))`; `r = (f - y) / N` is the current residual; the step
    is `lr` (the output bias is the caller's). Writes the block partials of `sum_j phi(z_ij) w1_j`
    at the new parameters into f_parts, (n_blocks, N) float64; n_blocks sets the block size.
    Each parameter array is read and written once.
    """
    act = len(tag) - 1
    xs, rs = _padded(x, r)
    for q in range(f_parts.shape[0]):
        if x.shape[1] == 1:
            _step_block_1d(q, xs, rs, params, act, c0, c1, lr, f_parts)
        else:
            _step_block(q, x, r, params, act, c0, c1, lr, f_parts)


@nb.njit(parallel=True, cache=True, fastmath=_FASTMATH)
def depth1_gd_step_parallel(x, r, params, tag, c0, c1, lr, f_parts):
    """`depth1_gd_step_serial` with the blocks shared among threads (the same result)."""
    act = len(tag) - 1
    xs, rs = _padded(x, r)
    for q in nb.prange(f_parts.shape[0]):
        if x.shape[1] == 1:
            _step_block_1d(q, xs, rs, params, act, c0, c1, lr, f_parts)
        else:
            _step_block(q, x, r, params, act, c0, c1, lr, f_parts)


@nb.njit
def _features_row(h, i, w, j0, b, c, scale, act, a, g):
    """Row i of `hidden_features_serial`, in sub-blocks of 512 units that stay in L1."""
    zero, one = c - c, _constant(1.0, a)
    erf_c = _constant(_TWO_OVER_SQRT_PI, a)
    for s0 in range(0, a.shape[1], 512):
        s1 = min(s0 + 512, a.shape[1])
        zr, gr, ss = a[i, s0:s1], g[i, s0:s1], scale[j0 + s0 : j0 + s1]
        _preactivation(zr, h, i, w, b, j0 + s0, j0 + s1, c)
        for j in range(s1 - s0):
            aj, sj = _phi_and_slope(zr[j], act, zero, one, erf_c)
            zr[j] = aj
            gr[j] = ss[j] * sj


@nb.njit(cache=True)
def hidden_features_serial(h, w, j0, b, c, scale, tag, a, g):
    """Activations and output gradients of hidden units j0 .. j0 + K (K = a.shape[1]):
    `z = c * h @ w[:, j0:j0+K] + b[j0:j0+K]`, `a = phi(z)`, `g = scale[j0:j0+K] * phi'(z)`, with
    the matrix product fused in (for a small fan-in: the first hidden layer)."""
    act = len(tag) - 1
    for i in range(h.shape[0]):
        _features_row(h, i, w, j0, b, c, scale, act, a, g)


@nb.njit(parallel=True, cache=True)
def hidden_features_parallel(h, w, j0, b, c, scale, tag, a, g):
    """`hidden_features_serial` with the rows shared among threads (the same result)."""
    act = len(tag) - 1
    for i in nb.prange(h.shape[0]):
        _features_row(h, i, w, j0, b, c, scale, act, a, g)


@nb.njit
def _activate_row(z, i, j0, b, c, scale, act, g):
    zero, one = c - c, _constant(1.0, z)
    erf_c = _constant(_TWO_OVER_SQRT_PI, z)
    zr, gr = z[i], g[i]
    bb, ss = b[j0 : j0 + z.shape[1]], scale[j0 : j0 + z.shape[1]]
    for j in range(z.shape[1]):
        aj, sj = _phi_and_slope(c * zr[j] + bb[j], act, zero, one, erf_c)
        zr[j] = aj
        gr[j] = ss[j] * sj


@nb.njit(cache=True)
def activate_serial(z, j0, b, c, scale, tag, g):
    """In place `z <- phi(c z + b[j0:j0+K])` and `g = scale[j0:j0+K] * phi'(c z + b[j0:j0+K])`
    for a pre-activation block `z = h @ w[:, j0:j0+K]` computed by BLAS (a large fan-in)."""
    act = len(tag) - 1
    for i in range(z.shape[0]):
        _activate_row(z, i, j0, b, c, scale, act, g)


@nb.njit(parallel=True, cache=True)
def activate_parallel(z, j0, b, c, scale, tag, g):
    """`activate_serial` with the rows shared among threads (the same result)."""
    act = len(tag) - 1
    for i in nb.prange(z.shape[0]):
        _activate_row(z, i, j0, b, c, scale, act, g)


@nb.njit
def _eval_row(i, x, params, params0, tangent, readouts, c0, act, block, f_parts, g_parts):
    """Row i of `depth1_eval_serial`: per block of units, the three pre-activations in scratch
    that stays in L1, then the readouts of every output."""
    w, b = params
    w0, b0 = params0
    dw, db = tangent
    v, v0, dv = readouts
    n = w.shape[1]
    zero = c0 - c0
    one = _constant(1.0, w)  # not zero + 1: an int would promote float32 to float64
    erf_c = _constant(_TWO_OVER_SQRT_PI, w)
    z = np.empty(block, dtype=w.dtype)
    z0 = np.empty(block, dtype=w.dtype)
    u = np.empty(block, dtype=w.dtype)
    for q in range(f_parts.shape[0]):
        j0 = q * block
        j1 = min(j0 + block, n)
        m = j1 - j0
        zq, z0q, uq = z[:m], z0[:m], u[:m]
        _preactivation(zq, x, i, w, b, j0, j1, c0)  # at theta
        _preactivation(z0q, x, i, w0, b0, j0, j1, c0)  # at theta0
        _preactivation(uq, x, i, dw, db, j0, j1, c0)  # the tangent's
        for j in range(m):
            zq[j] = _phi(zq[j], act, zero)
            h0, s0 = _phi_and_slope(z0q[j], act, zero, one, erf_c)
            z0q[j] = h0
            uq[j] = s0 * uq[j]
        for a in range(v.shape[0]):
            va, v0a, dva = v[a, j0:j1], v0[a, j0:j1], dv[a, j0:j1]
            af = af0 = ag = zero
            for j in range(m):
                af += zq[j] * va[j]
                af0 += z0q[j] * v0a[j]
                ag += z0q[j] * dva[j] + uq[j] * v0a[j]
            f_parts[q, 0, i, a] = af
            f_parts[q, 1, i, a] = af0
            g_parts[q, i, a] = ag


@nb.njit(cache=True, fastmath=_FASTMATH)
def depth1_eval_serial(x, params, params0, tangent, readouts, tag, c0, block, f_parts, g_parts):
    """The network at theta and theta0 and the linearised model's `J0 delta` of a one-hidden-layer
    network on the rows of x, without any N x width array.

    `params = (W, b)` and `params0 = (W0, b0)` are the hidden layers at theta and theta0 (W (d,
    n), b (n,)), `tangent = (dW, db)` the hidden layer of delta; `readouts = (V, V0, dV)` the
    output weights at theta, theta0 and of delta, transposed to (K, n). With `h = phi(c0 x W +
    b)`, `h0 = phi(z0)`, `z0 = c0 x W0 + b0` and `u = phi'(z0) (c0 x dW + db)`, block q of
    `block` units writes `sum_j h_ij V_aj` to f_parts[q, 0, i, a], `sum_j h0_ij V0_aj` to
    f_parts[q, 1, i, a] and `sum_j (h0_ij dV_aj + u_ij V0_aj)` to g_parts[q, i, a] (the caller
    applies the output multipliers and biases); partials float64, (n_blocks, 2, N, K) and
    (n_blocks, N, K)."""
    act = len(tag) - 1
    for i in range(x.shape[0]):
        _eval_row(i, x, params, params0, tangent, readouts, c0, act, block, f_parts, g_parts)


@nb.njit(parallel=True, cache=True, fastmath=_FASTMATH)
def depth1_eval_parallel(x, params, params0, tangent, readouts, tag, c0, block, f_parts, g_parts):
    """`depth1_eval_serial` with the rows shared among threads (the same result)."""
    act = len(tag) - 1
    for i in nb.prange(x.shape[0]):
        _eval_row(i, x, params, params0, tangent, readouts, c0, act, block, f_parts, g_parts)
