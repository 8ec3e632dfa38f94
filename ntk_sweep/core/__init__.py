"""The numerical core of ntk-sweep: pure NumPy functions of inputs and parameters, named after
the mathematics (../shared/reference/MATH.md). No Hydra, MLflow or matplotlib here, and no I/O
beyond reading a user's CSV file in `datasets`; the app (`ntk_sweep.config`, `experiment`,
`tracking`, `callbacks`, `figures`, `aggregate`) sits on top.

- `network`: the MLP (K >= 1 outputs), its parameterizations, forward pass, Jacobian-vector
  products, GD (MATH.md sections 1-2, 4)
- `kernels`: empirical and infinite-width NTK/NNGP, kernel drift and distance, kernel
  diagnostics (sections 2, 3, 5)
- `dynamics`: the linearised and constant-kernel predictions and learning-rate phases (section 4)
- `datasets`: the datasets, bit-identical for a seed
- `_fused`: numba kernels of the one-hidden-layer fast path
"""
