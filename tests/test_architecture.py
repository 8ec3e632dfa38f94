"""The architecture, checked: `ntk_sweep.core` is pure NumPy (no app module, no Hydra, MLflow or
matplotlib, no import cycles, no file or network I/O), and importing it loads none of those."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "ntk_sweep" / "core"
FORBIDDEN = ("hydra", "omegaconf", "mlflow", "matplotlib")
# File and network I/O is the app's (`ntk_sweep.dataset_sources` reads the data files): core
# imports none of these modules (a dotted name forbids that module and its submodules) ...
IO_MODULES = (
    "os", "pathlib", "io", "shutil", "tempfile", "glob", "fileinput", "urllib", "http",
    "socket", "ssl", "requests", "ftplib", "json", "csv", "pickle", "shelve", "marshal",
    "sqlite3", "dbm", "zipfile", "tarfile", "gzip", "bz2", "lzma", "subprocess", "pandas",
    "h5py", "sklearn.datasets",
)  # fmt: skip
# ... calls no builtin that opens a file or reads stdin ...
IO_BUILTINS = ("open", "input")
# ... and calls or touches no attribute that reads, writes or fetches: NumPy's file readers and
# writers (on `np` / `numpy`), any `read_*` of pandas (`pd` / `pandas`), and these on anything.
NUMPY_IO = ("load", "save", "savez", "savez_compressed", "loadtxt", "savetxt", "genfromtxt",
            "fromfile", "fromregex", "memmap")  # fmt: skip
IO_ATTRIBUTES = ("environ", "getenv", "putenv", "tofile", "urlopen", "install_opener",
                 "read_text", "read_bytes", "write_text", "write_bytes")  # fmt: skip


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "ntk_sweep.core":  # `from ntk_sweep.core import _fused`
                names.update(f"ntk_sweep.core.{a.name}" for a in node.names)
    return names


def _core_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(CORE.glob("*.py")):
        name = "ntk_sweep.core" if path.stem == "__init__" else f"ntk_sweep.core.{path.stem}"
        graph[name] = _imports(path)
    return graph


def test_core_imports_no_app_module_and_no_framework():
    graph = _core_graph()
    assert "ntk_sweep.core.network" in graph and "ntk_sweep.core.kernels" in graph
    bad = {
        (mod, imp)
        for mod, imports in graph.items()
        for imp in imports
        if (imp.startswith("ntk_sweep") and not imp.startswith("ntk_sweep.core"))
        or imp.split(".")[0] in FORBIDDEN
    }
    assert not bad, f"core modules importing app modules or frameworks: {sorted(bad)}"


def test_core_has_no_import_cycles():
    core = _core_graph()  # once: parsing every core file per module grows as modules^2
    graph = {m: {i for i in imps if i in core} - {m} for m, imps in core.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for dep in graph[mod]:
            assert state.get(dep) != 1, f"import cycle: {' -> '.join([*path, mod, dep])}"
            if dep not in state:
                visit(dep, [*path, mod])
        state[mod] = 2

    for mod in graph:
        if mod not in state:
            visit(mod, [])


def test_core_modules_share_only_public_names():
    """A core module imports no private (`_name`) function or constant of another: what two
    modules share is public (`checks` holds the argument checks). `_fused`, the private numba
    module, is imported whole by the modules it serves."""
    bad = set()
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ntk_sweep"):
                private = {a.name for a in node.names if a.name.startswith("_")} - {"_fused"}
                bad.update(f"{path.name}: {node.module}.{name}" for name in private)
    assert not bad, f"private names imported across core modules: {sorted(bad)}"


# The seam for a numerical backend: the run (experiment.py) builds the network and the schedule
# and consumes one measurement (`measure_steps` yielding `StepMetrics`, returning a `Record`);
# it never calls the kernels, the training loop or the network's passes itself.
RUN_MAY_IMPORT_FROM_CORE = {"ntk_sweep.core.measure", "ntk_sweep.core.network"}


RUN_MODULES = ("experiment", "lifecycle", "job", "run_resume", "figure_adapter", "summary")


@pytest.mark.parametrize("module", RUN_MODULES)
def test_the_run_consumes_a_measurement_and_calls_no_numerical_kernel(module):
    path = Path(__file__).resolve().parents[1] / "ntk_sweep" / f"{module}.py"
    core_imports = {m for m in _imports(path) if m.startswith("ntk_sweep.core")}
    assert core_imports <= RUN_MAY_IMPORT_FROM_CORE, core_imports - RUN_MAY_IMPORT_FROM_CORE
    names = {
        alias.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module == "ntk_sweep.core.network"
        for alias in node.names
    }
    assert names <= {"MLP"}, names  # only to build the network


def test_the_boundary_check_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ntk_sweep.tracking import open_store\n    import mlflow\n")
    assert {"ntk_sweep.tracking", "mlflow"} <= _imports(bad)


def _io_violations(path: Path) -> list[str]:
    """Each file or network I/O in a source file, as "line: what" (lazy imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for mod in filter(None, mods):
                if any(mod == m or mod.startswith(f"{m}.") for m in IO_MODULES):
                    found.append(f"{line}: import {mod}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in IO_BUILTINS:
                found.append(f"{line}: {node.func.id}(...)")
        elif isinstance(node, ast.Attribute):
            base = node.value.id if isinstance(node.value, ast.Name) else None
            if base in ("np", "numpy") and node.attr in NUMPY_IO:
                found.append(f"{line}: {base}.{node.attr}")
            elif base in ("pd", "pandas") and node.attr.startswith("read_"):
                found.append(f"{line}: {base}.{node.attr}")
            elif node.attr in IO_ATTRIBUTES:
                found.append(f"{line}: .{node.attr}")
    return found


def test_core_does_no_file_or_network_io():
    bad = {f"{path.name}:{v}" for path in sorted(CORE.glob("*.py")) for v in _io_violations(path)}
    assert not bad, f"file or network I/O in ntk_sweep.core (the app's job): {sorted(bad)}"


def test_the_io_check_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import os.path\nimport numpy as np\nimport pandas as pd\n"
        "def f(p):\n"
        "    from urllib.request import urlopen\n"
        "    with open(p) as h:\n        h.read()\n"
        "    np.savez(p, x=1)\n    a = np.load(p)\n    pd.read_csv(p)\n"
        "    return os.environ['HOME'], a\n"
    )
    found = [v.split(": ", 1)[1] for v in _io_violations(bad)]
    assert sorted(found) == sorted(
        [
            "import os.path",
            "import pandas",
            "import urllib.request",
            "open(...)",
            "np.savez",
            "np.load",
            "pd.read_csv",
            ".environ",
        ]
    ), found
    ok = tmp_path / "ok.py"  # NumPy arithmetic and names alike are not I/O
    ok.write_text("import numpy as np\ndef f(x, load):\n    return np.linalg.norm(x) + load\n")
    assert _io_violations(ok) == []


def test_importing_core_loads_no_framework():
    code = (
        "import sys, ntk_sweep.core, ntk_sweep.core.network, ntk_sweep.core.kernels, "
        "ntk_sweep.core.dynamics, ntk_sweep.core.datasets, ntk_sweep.core.training, "
        "ntk_sweep.core.losses, ntk_sweep.core.optimizers, ntk_sweep.core.kernel_predictions, "
        "ntk_sweep.core.checks\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=CORE.parents[1],
    )
    assert out.stdout.strip() == "[]"


# A whole run of the app in one interpreter (config, data, measurement, figures' and tracking's
# modules imported), then whether scipy.special was loaded: the MSE runs of relu networks
# never need it (~0.3 s of a run's start-up, benchmarks/README.md section 4), erf ones do.
_RUN_AND_LIST = """
import sys
from hydra import compose, initialize_config_dir
import ntk_sweep.callbacks, ntk_sweep.experiment, ntk_sweep.figures, ntk_sweep.tracking
from ntk_sweep.core.measure import measure
from ntk_sweep.experiment import preflight, schedule_of
with initialize_config_dir(sys.argv[1], version_base="1.3"):
    cfg = compose("config", overrides=sys.argv[2:])
data, net, _ = preflight(cfg, sys.argv[1])
record = measure(net, data, schedule_of(cfg, data), int(cfg.seed))
assert not record.failure and record.final_step == int(cfg.train.steps)
print("scipy.special" in sys.modules)
"""


def _loads_scipy_special(*overrides: str) -> bool:
    conf = CORE.parents[1] / "conf"
    out = subprocess.run(
        [sys.executable, "-c", _RUN_AND_LIST, str(conf), "train.steps=20", "width=32", *overrides],
        capture_output=True,
        text=True,
        check=True,
        cwd=CORE.parents[1],
    )
    return {"True": True, "False": False}[out.stdout.strip().splitlines()[-1]]


def test_scipy_special_is_loaded_only_by_the_runs_that_use_it():
    assert not _loads_scipy_special("model.activation=relu")
    assert _loads_scipy_special("model.activation=erf")
