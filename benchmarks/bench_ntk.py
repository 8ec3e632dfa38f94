"""Benchmark 1: the layer-wise empirical NTK against an explicit-Jacobian `J @ J.T`.

Both in NumPy, same network and inputs: N = 500 inputs of dimension 10, width 10 000, depth 1
and 3, relu, NTK parameterization, float64 (`--dtype float32` for the other option). Prints

- the layer-wise kernel's time (fused features, the default, and the plain NumPy reference);
- the explicit-Jacobian baseline: J materialised (per-layer outer products of the inputs of
  each layer and the back-propagated gradients, the same J as N backward passes give) and
  `J @ J.T` (NumPy dispatches it to BLAS syrk). At depth 3, J has 2e8 columns (800 GB), so
  it is built and contracted in blocks of columns; a few blocks of each big layer are timed
  and the total extrapolated linearly in the number of columns (said so in the output);
- FLOP counts (matrix products only; a symmetric product `a @ a.T` counts N(N+1)K, the work
  syrk does, not 2 N^2 K) and the achieved rate against a plain square matmul timed here.

Usage: python benchmarks/bench_ntk.py [--threads 1] [--dtype float32] [--depths 1 3]
"""

from __future__ import annotations

import time

import numpy as np
from _common import apply_threads, best_times, gemm, header, parser

from ntk_sweep.core.kernels import empirical_ntk
from ntk_sweep.core.network import MLP, forward_cache, init_params, vjp

N, D, WIDTH = 500, 10, 10_000


def layerwise_flops(net: MLP, n: int) -> float:
    """Matrix-product FLOPs of `empirical_ntk(net, params, x)` (x2 = None)."""
    d, w, L = net.input_dim, net.width, net.depth
    syrk = n * (n + 1)
    flops = 2 * n * d * w  # first layer's pre-activations
    flops += (L - 1) * 2 * n * w * w  # forward through the hidden-to-hidden layers
    flops += (L - 1) * 2 * n * w * w  # back-propagation to the lower layers
    flops += syrk * w  # sum_units h_L h_L^T (output layer)
    flops += L * syrk * w  # G_l G_l^T of every hidden layer
    flops += syrk * d + (L - 1) * syrk * w  # H_{l-1} H_{l-1}^T of every hidden layer
    return flops


def jacobian_blocks(net: MLP, params, x):
    """The explicit Jacobian as blocks of columns: yields (block_fn, n_columns, layer, n_blocks)
    groups; block_fn(i) returns the i-th (N, cols) block. Weight-layer l's Jacobian with respect
    to W_l[k, j] is c_l * H_{l-1}[:, k] * G_l[:, j]; with respect to b_l[j] it is cb_l G_l[:, j]."""
    cache = forward_cache(net, params, x)
    c, cb = net.multipliers, net.bias_multipliers
    # gradients of f with respect to each layer's pre-activations (backward with unit cotangent)
    grads = [None] * net.n_layers
    g = np.ones((len(x), 1), dtype=net.dtype)
    for l in reversed(range(net.n_layers)):
        grads[l] = g
        if l > 0:
            g = (c[l] * (g @ params[l][0].T)) * cache.slopes[l - 1]
    groups = []
    for l in range(net.n_layers):
        h, gl = cache.inputs[l], grads[l]
        fan_in = h.shape[1]
        rows = max(1, min(fan_in, 2**22 // (gl.shape[1] * len(x))))  # ~32 MB blocks

        def block(i, h=h, gl=gl, l=l, rows=rows):
            k0 = i * rows
            hk = h[:, k0 : k0 + rows]
            return (c[l] * hk[:, :, None] * gl[:, None, :]).reshape(len(x), -1)

        groups.append((block, fan_in * gl.shape[1], l, -(-fan_in // rows)))
        groups.append((lambda i, gl=gl, l=l: cb[l] * gl, gl.shape[1], l, 1))
    return groups


def explicit_full(net: MLP, params, x) -> tuple[np.ndarray, float, float]:
    """J materialised whole (preallocated, each column block written once by broadcasting),
    then `J @ J.T`; returns (K, build seconds, product seconds)."""
    t0 = time.perf_counter()
    jac = np.empty((len(x), net.n_params), dtype=net.dtype)
    col = 0
    for fn, _, _, n_blocks in jacobian_blocks(net, params, x):
        for i in range(n_blocks):
            block = fn(i)
            jac[:, col : col + block.shape[1]] = block
            col += block.shape[1]
    assert col == net.n_params
    t1 = time.perf_counter()
    k = jac @ jac.T
    t2 = time.perf_counter()
    return k, t1 - t0, t2 - t1


def jacobian_by_backprop(net: MLP, params, x) -> float:
    """Seconds to build J the textbook way: N backward passes (unit cotangents), flattened."""
    t0 = time.perf_counter()
    cache = forward_cache(net, params, x)
    jac = np.empty((len(x), net.n_params), dtype=net.dtype)
    for i in range(len(x)):
        e = np.zeros(len(x), dtype=net.dtype)
        e[i] = 1
        jac[i] = np.concatenate(
            [np.concatenate([w.ravel(), b]) for w, b in vjp(net, params, cache, e)]
        )
    return time.perf_counter() - t0


def explicit_extrapolated(net: MLP, params, x, sample_blocks: int = 3) -> tuple[float, float]:
    """Time of building J block by block and accumulating `J_b @ J_b.T`, timing at most
    `sample_blocks` blocks of each group and extrapolating; returns (seconds, fraction timed)."""
    total, timed_cols, all_cols = 0.0, 0, 0
    acc = np.zeros((len(x), len(x)))
    for fn, n_cols, _, n_blocks in jacobian_blocks(net, params, x):
        todo = min(n_blocks, sample_blocks)
        t0 = time.perf_counter()
        cols = 0
        for i in range(todo):
            jb = fn(i)
            acc += jb @ jb.T
            cols += jb.shape[1]
        dt = time.perf_counter() - t0
        total += dt * (n_cols / cols)
        timed_cols += cols
        all_cols += n_cols
    return total, timed_cols / all_cols


def bench_depth(net: MLP, x: np.ndarray, repeat: int) -> None:
    params = init_params(net, 0)
    empirical_ntk(net, params, x[:8])  # compile / load the kernels outside the timing
    k = empirical_ntk(net, params, x)
    matmul, matmul_flops = gemm(2000, net.dtype)
    times = best_times(
        {
            "fused": lambda: empirical_ntk(net, params, x),
            "numpy": lambda: empirical_ntk(net, params, x, backend="numpy"),
            "matmul": matmul,  # timed in the same rounds: the machine's load varies
        },
        repeat,
    )
    t_fused, t_numpy = times["fused"], times["numpy"]
    rate = matmul_flops / times["matmul"]
    print(f"-- depth {net.depth}: {net.n_params:,} parameters")
    print(f"   plain matmul (2000^3 {net.dtype}, same rounds): {rate / 1e9:.1f} GFLOP/s")
    flops = layerwise_flops(net, N)
    print(
        f"   layer-wise (fused features): {t_fused:.3f} s, {flops / 1e9:.1f} GFLOP, "
        f"{flops / t_fused / 1e9:.1f} GFLOP/s = {flops / t_fused / rate:.0%} of matmul"
    )
    print(
        f"   layer-wise (NumPy reference): {t_numpy:.3f} s, "
        f"{flops / t_numpy / 1e9:.1f} GFLOP/s = {flops / t_numpy / rate:.0%} of matmul"
    )
    j_flops = N * (N + 1) * net.n_params
    if net.depth == 1:
        k_j, t_build, t_prod = explicit_full(net, params, x)
        t_jac = t_build + t_prod
        err = np.abs(k - k_j).max() / np.abs(k_j).max()
        t_backprop = jacobian_by_backprop(net, params, x)
        print(
            f"   explicit Jacobian: {t_jac:.3f} s (build J {t_build:.3f} s + J @ J.T "
            f"{t_prod:.3f} s at {j_flops / t_prod / 1e9:.1f} GFLOP/s); "
            f"max |difference| / max |K| = {err:.1e}"
        )
        print(
            f"   (J built by {N} backward passes instead: {t_backprop:.3f} s; "
            f"J @ J.T alone is {t_prod / t_fused:.1f}x the layer-wise time)"
        )
    else:
        t_jac, frac = explicit_extrapolated(net, params, x)
        print(
            f"   explicit Jacobian (blocks of J, {frac:.2%} of the {net.n_params:,} "
            f"columns timed, extrapolated): {t_jac:.0f} s, "
            f"{j_flops / 1e12:.0f} TFLOP at {j_flops / t_jac / 1e9:.1f} GFLOP/s"
        )
    print(
        f"   speed-up over the explicit Jacobian: {t_jac / t_fused:.0f}x "
        f"(FLOP ratio {j_flops / flops:.1f}x); fused vs NumPy reference: "
        f"{t_numpy / t_fused:.2f}x"
    )


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--depths", type=int, nargs="+", default=[1, 3])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    with apply_threads(args.threads):
        header(f"empirical NTK, N={N}, d={D}, width={WIDTH}, {args.dtype}", args.threads)
        x = np.random.default_rng(0).standard_normal((N, D))
        for depth in args.depths:
            net = MLP(D, WIDTH, depth, "relu", "ntk", sigma_b=1.0, dtype=args.dtype)
            bench_depth(net, x, args.repeat)


if __name__ == "__main__":
    main()
