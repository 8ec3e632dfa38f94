"""Peak memory of one run, estimated from its sizes before any array is allocated.

`peak_bytes(...)` is a pure function (integers in, bytes per component out) that follows what
`measure.measure_steps` really keeps alive at its peak (a log step during training: the
training loop's forward caches next to the kernels being measured):

- parameters: the float64 draws, theta_0, theta, the linearised model's delta, both gradients
  and the updates' temporaries and results (10 copies), plus the optimiser state of both
  models (momentum: 1 copy each, adam: 2), in the network's dtype;
- activations: the forward caches (every hidden layer's input and slope, N x width each) of the
  training network and of its linearisation on the training inputs, one row block of the test
  inputs' evaluation (`network.row_blocks`: nothing N_test x width is kept), the empirical
  NTK's forward passes below its last hidden layer on both input sets (that layer is summed
  in chunks), its back-propagated gradients (N K x width, depth > 1) and its chunked work
  arrays; the initial derivative pattern s_0 on the training inputs
  and the forward cache of the activation-flip split (`core.flips`: 3 N x width per layer);
- kernels (float64): the (N K)^2 training kernel at init, now and at the previous log step, with
  the eigendecomposition's copy and eigenvectors (6 in all), the frozen-pattern kernel of the
  activation-flip split and a difference (2), the (M K x N K) test-train kernel
  and the test-input kernels; the infinite-width NTK's recursion (a dozen N x N and M x N
  arrays) where it is computed;
- record: the predictions of the network, its linearisation and the kernel models at every
  log step on train and test inputs, and the data (float64 and the network's dtype).

Measured against tracemalloc's peak of real runs (tests/test_memory.py): within a factor of 2.
"""

from __future__ import annotations

import math

# Bytes of one (N x chunk) work array of `kernels.empirical_ntk` (kernels.CHUNK_BYTES); the
# activations of one row block of `network.forward` / `jvp` (network.BLOCK_ELEMENTS).
from ntk_sweep.core.kernels import CHUNK_BYTES
from ntk_sweep.core.network import BLOCK_ELEMENTS

COMPONENTS = ("parameters", "activations", "kernels", "record")
_OPTIMIZER_SLOTS = {"gd": 0, "sgd": 0, "momentum": 1, "adam": 2}
_PARAM_COPIES = 10
_ANALYTIC_ARRAYS = 12
_KERNEL_WORK_ARRAYS = 3
_RECORD_ARRAYS = 5


def n_params(input_dim: int, width: int, depth: int, outputs: int) -> int:
    """Parameters of the MLP (weights and biases; `network.MLP.n_params`)."""
    fan_ins = [input_dim] + [width] * depth
    fan_outs = [width] * depth + [outputs]
    return sum(i * o + o for i, o in zip(fan_ins, fan_outs, strict=True))


def peak_bytes(
    *,
    width: int,
    depth: int,
    input_dim: int,
    n_train: int,
    n_test: int,
    outputs: int = 1,
    full_kernel: bool = True,
    test_kernel_points: int = 64,
    itemsize: int = 8,
    optimizer: str = "gd",
    analytic: bool = False,
    n_log: int = 25,
) -> dict[str, int]:
    """Estimated peak bytes of a run, per component (`COMPONENTS`); sum them for the total.

    `full_kernel`: K > 1 outputs with the full (N K x N K) kernel (`experiment.kernel_form`),
    else the output-averaged N x N one. Python integers throughout: no overflow at any size.
    """
    n, m, k, w = int(n_train), int(n_test), int(outputs), int(width)
    kk = k if full_kernel else 1
    sub = min(m, int(test_kernel_points))
    p = n_params(input_dim, w, depth, k)
    copies = _PARAM_COPIES + 2 * _OPTIMIZER_SLOTS.get(optimizer, 2)
    parameters = copies * p * itemsize
    rows = max(n, m)
    chunk = min(w, max(256, CHUNK_BYTES // (8 * rows * k)))
    activations = itemsize * (
        2 * depth * w * 3 * n  # caches: the training net and its linearisation (train inputs)
        + 2 * depth * min(m * w, BLOCK_ELEMENTS)  # test inputs: evaluated in row blocks
        + 2 * (depth - 1) * w * (n + m)  # the empirical NTK's forward passes below its last layer
        + (k * w * (n + m) if depth > 1 else 0)  # its back-propagated gradients
        + _KERNEL_WORK_ARRAYS * rows * k * chunk  # its chunked work arrays
        + 3 * depth * w * n  # the flip split: s_0, the current slopes and inputs (core.flips)
    )
    kernels = 8 * (8 * (n * kk) ** 2 + (m * kk) * (n * kk) + 3 * (sub * kk) ** 2)
    if analytic:
        kernels += 8 * _ANALYTIC_ARRAYS * (n * n + m * n)
    record = 8 * (_RECORD_ARRAYS * n_log * (n + m) * k + 2 * (n + m) * input_dim)
    return {
        "parameters": parameters,
        "activations": activations,
        "kernels": kernels,
        "record": record,
    }


def format_bytes(n: float) -> str:
    """`75 GiB`, `1.5 TiB`, `310 MiB`: two significant digits at least."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    exp = min(int(math.log(max(n, 1), 1024)), len(units) - 1)
    value = n / 1024**exp
    return f"{value:.1f} {units[exp]}" if value < 10 else f"{value:.0f} {units[exp]}"
