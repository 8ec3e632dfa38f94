"""The numerical core of ntk-sweep: pure NumPy functions of inputs and parameters, named after
the mathematics (../shared/reference/MATH.md). No Hydra, MLflow or matplotlib here, and no file or
network I/O (arrays in, arrays out; tests/test_architecture.py checks both); the app
(`ntk_sweep.config`, `dataset_sources`, `experiment`, `tracking`, `callbacks`, `figures`,
`aggregate`) sits on top and reads the files.

- `network`: the MLP (K >= 1 outputs), its parameterizations, forward pass, Jacobian-vector
  products, GD (MATH.md sections 1-2, 4)
- `kernels`: empirical and infinite-width NTK/NNGP, kernel drift and distance, kernel
  diagnostics (sections 2, 3, 5)
- `dynamics`: a kernel's spectrum and the learning-rate phases (sections 3-4)
- `kernel_predictions`: every constant-kernel prediction (section 4, eqs. 7-8): the closed form
  of GD on the MSE, the iterated function-space map where there is none (minibatches,
  momentum, cross-entropy), the kernel machine, the stable-lr bound 2N/lambda_max
- `losses`: the MSE and cross-entropy losses and their gradients dL/df (the only MSE)
- `optimizers`: gd, sgd, heavy-ball momentum and adam over the parameters; seeded minibatches
- `training`: the network trained next to its linearisation by any of them (sections 4-5)
- `measure`: one run's measurement, train and measure, as a typed record (sections 2-5)
- `datasets`: the `Dataset` type, the generated datasets and the preparation of read arrays
  (split, standardise, class targets), bit-identical for a seed; `ntk_sweep.dataset_sources`
  reads the files
- `checks`: the argument checks every core module shares
- `_fused`: numba kernels of the one-hidden-layer fast path
"""
