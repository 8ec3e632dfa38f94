"""Configuration schema of the sweep app: types, allowed values and validation, declared once.

The dataclasses below are registered in Hydra's ConfigStore (`register_configs`), so a value of
the wrong type (`width=abc`) fails while Hydra composes the config. Ranges and allowed values
live next to each field (the `rule` metadata) and are checked by `validate(cfg)`, which raises
`ConfigError` with one line naming the dotted field, the bad value and what is allowed, e.g.
`model.width=0 is invalid: expected an integer >= 1`. The allowed activations,
parameterizations, dtypes and datasets come from the numerical core and the dataset sources;
the dataset schemas are generated from `dataset_sources.DATASET_OPTIONS` (types from the defaults).

`describe_hydra_error(exc)` turns Hydra's own composition errors (unknown config group option,
value of the wrong type, unknown key, malformed override) into the same one-line form.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from ntk_sweep.core.losses import LOSSES
from ntk_sweep.core.network import ACTIVATIONS, BACKENDS, DTYPES, PARAMETERIZATIONS
from ntk_sweep.core.optimizers import OPTIMIZERS
from ntk_sweep.dataset_sources import DATASET_OPTIONS, DATASETS, declared_sizes
from ntk_sweep.errors import ConfigError, TrackingError  # noqa: F401 - raised by callers too

# The paper's snapshot steps (MATH.md section 1): always logged when <= train.steps.
PAPER_SNAPSHOT_STEPS = (2, 20, 100, 500, 1000, 3000)
ANALYTIC_CHOICES = ("auto", "true", "false")
PROGRESS_CHOICES = ("auto", "true", "false")
# tracking.figures: figures.FIGURE_SETS (paper, all, none); true / false, the values of the
# earlier boolean option, mean all / none.
FIGURES_CHOICES = ("paper", "all", "none", "true", "false")
# Where a closed-form infinite-width NTK exists (kernels.has_analytic_ntk; kept in sync by a test).
ANALYTIC_ACTIVATIONS = ("relu", "erf", "linear")
ANALYTIC_PARAMETERIZATIONS = ("ntk",)


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """Allowed values of one field: an integer/number range or a set of choices."""

    kind: str  # "int", "float", "choice", "int_list", "str"
    minimum: float | None = None
    strict: bool = False  # minimum excluded
    choices: tuple[str, ...] = ()
    nullable: bool = False

    def describe(self) -> str:
        if self.kind == "int":
            return f"an integer >= {int(self.minimum)}" + (" or null" if self.nullable else "")
        if self.kind == "float":
            op = ">" if self.strict else ">="
            return f"a finite number {op} {self.minimum:g}" + (" or null" if self.nullable else "")
        if self.kind == "choice":
            return f"one of {', '.join(self.choices)}"
        if self.kind == "int_list":
            return f"a list of integers >= {int(self.minimum)}"
        return "a non-empty string" + (" or null" if self.nullable else "")

    def check(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.kind == "int":
            return _is_int(value) and value >= self.minimum
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, int | float):
                return False
            ok = math.isfinite(value)
            return ok and (value > self.minimum if self.strict else value >= self.minimum)
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if self.kind == "int_list":
            return isinstance(value, list | tuple) and all(
                _is_int(v) and v >= self.minimum for v in value
            )
        return isinstance(value, str) and value.strip() != ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def rule(kind: str, **kwargs: Any) -> dict[str, Rule]:
    return {"rule": Rule(kind, **kwargs)}


def _f(default: Any, kind: str, **kwargs: Any) -> Any:
    """A dataclass field with a default (mutable defaults via factory) and a validation rule."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=rule(kind, **kwargs))
    return field(default=default, metadata=rule(kind, **kwargs))


# --------------------------------------------------------------------------- schema


@dataclass
class ModelConfig:
    """The MLP (ntk_sweep.core.network.MLP). width/depth default to the top-level shortcuts."""

    width: int = _f("${width}", "int", minimum=1)
    depth: int = _f("${depth}", "int", minimum=1)
    activation: str = _f("relu", "choice", choices=ACTIVATIONS)
    parameterization: str = _f("ntk", "choice", choices=PARAMETERIZATIONS)
    sigma_w: float = _f(1.0, "float", minimum=0.0, strict=True)
    sigma_b: float = _f(1.0, "float", minimum=0.0)
    dtype: str = _f("float64", "choice", choices=DTYPES)
    # Lazy-to-rich dial (Chizat & Bach 2019): a number alpha > 0 trains the centred model
    # alpha * (f_net - f_net(theta_0)) with lr / alpha^2 (alpha -> inf: lazy; small: rich);
    # null (default): the plain, uncentred network. alpha=1 is the centred network, not the
    # default (ntk_sweep/core/network.py, docs/metrics.md).
    alpha: float | None = _f(None, "float", minimum=0.0, strict=True, nullable=True)
    # Network outputs K: a K-class dataset needs K (one-hot targets, docs/metrics.md).
    outputs: int = _f(1, "int", minimum=1)


@dataclass
class TrainConfig:
    """The optimiser and loss, and what is measured along the way."""

    lr: float = _f("${lr}", "float", minimum=0.0, strict=True)
    steps: int = _f(3000, "int", minimum=1)
    # About this many geometrically spaced log steps from 0 to `steps`, plus `snapshot_steps`.
    n_log_points: int = _f(20, "int", minimum=2)
    snapshot_steps: list[int] = _f(list(PAPER_SNAPSHOT_STEPS), "int_list", minimum=0)
    fig8_step: int = _f(500, "int", minimum=0)  # clamped to the nearest log step
    # auto: use the infinite-width NTK where it is defined; true: require it; false: skip it.
    analytic: str = _f("auto", "choice", choices=ANALYTIC_CHOICES)
    # The test-input kernel (drift/distance on test inputs) uses at most this many test points.
    test_kernel_points: int = _f(64, "int", minimum=1)
    # GD implementation (training.gd_trajectory): auto | numpy | fused (one hidden layer, numba).
    backend: str = _f("auto", "choice", choices=BACKENDS)
    # Optimiser (ntk_sweep.core.optimizers): gd (full batch, the paper's) | sgd | momentum (heavy
    # ball) | adam (negative control: no constant-kernel prediction, logged as NaN).
    optimizer: str = _f("gd", "choice", choices=OPTIMIZERS)
    # Seeded minibatches of this many samples (sgd: required; momentum, adam: null = all N).
    batch_size: int | None = _f(None, "int", minimum=1, nullable=True)
    momentum: float = _f(0.9, "float", minimum=0.0)  # heavy-ball mu in [0, 1) (momentum only)
    loss: str = _f("mse", "choice", choices=LOSSES)  # mse | xent (cross-entropy, classification)
    # K > 1 outputs: the full (N K x N K) empirical NTK where it fits this budget, else the
    # output-averaged (N x N) kernel (docs/metrics.md, "Multi-output").
    kernel_budget_mb: float = _f(256.0, "float", minimum=0.0, strict=True)


@dataclass
class TrackingConfig:
    """Where and how runs are recorded. Excluded from the config hash (does not change results)."""

    uri: str | None = _f(None, "str", nullable=True)  # > $MLFLOW_TRACKING_URI > ./mlflow.db
    experiment: str = _f("ntk-sweep", "str")
    artifact_location: str | None = _f(None, "str", nullable=True)  # default: next to the db
    run_name: str | None = _f(None, "str", nullable=True)  # default: `w=100 s=2 ...` (sweep_ui)
    # paper: the paper's figures and drift; all: every figure; none (see figure_set).
    figures: str = _f("paper", "choice", choices=FIGURES_CHOICES)
    progress: str = _f("auto", "choice", choices=PROGRESS_CHOICES)  # auto: when stderr is a tty
    aggregate_on_end: bool = False
    # A sweep job RUNNING without a heartbeat for this long is dead (resume re-runs it).
    stale_after_s: float = _f(120.0, "float", minimum=0.0, strict=True)
    # Per-step metrics go to the store in one request per this many seconds (0: every log step).
    metrics_every_s: float = _f(2.0, "float", minimum=0.0)


@dataclass
class DatasetConfig:
    """Base of the generated per-dataset schemas: `name` plus the dataset's options."""

    name: str = MISSING
    seed: int = _f("${seed}", "int", minimum=0)  # data seed (defaults to the run's seed)


@dataclass
class Config:
    """The root config. `width`, `depth`, `lr`, `seed` are the command-line shortcuts."""

    dataset: Any = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    width: int = _f(1000, "int", minimum=1)
    depth: int = _f(1, "int", minimum=1)
    lr: float = _f(0.1, "float", minimum=0.0, strict=True)
    seed: int = _f(0, "int", minimum=0)
    # Sweeps resume: a job whose config already FINISHED is skipped. force=true runs it anyway.
    force: bool = False


def _dataset_schema(name: str, options: dict[str, Any]) -> type:
    """A dataclass for dataset `name`: typed fields for its options (types from the defaults)."""
    fields: list[tuple[str, Any, Any]] = [("name", str, field(default=name))]
    for option, default in options.items():
        if isinstance(default, bool):
            typ: Any = bool
        elif isinstance(default, int):
            typ = int
        elif isinstance(default, float):
            typ = float
        elif isinstance(default, str):
            typ = str
        else:  # None (required / not set) or a list: anything, checked by load_dataset
            typ = Any
        fields.append((option, typ, field(default=default)))
    return dataclasses.make_dataclass(
        f"{name.title().replace('_', '')}Dataset", fields, bases=(DatasetConfig,)
    )


DATASET_SCHEMAS: dict[str, type] = {n: _dataset_schema(n, DATASET_OPTIONS[n]) for n in DATASETS}
SCHEMA_SUFFIX = "_schema"

_registered = False


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore (idempotent)."""
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for name, schema in DATASET_SCHEMAS.items():
        cs.store(group="dataset", name=f"{name}{SCHEMA_SUFFIX}", node=schema)
    # `${launch_id:}` in hydra.sweep.dir: the launching process's pid and 4 random hex digits,
    # so two sweeps started in the same second get their own folders. Cached like Hydra's
    # `${now:}` (and copied into every job's config with it): one value per launch.
    OmegaConf.register_new_resolver(
        "launch_id", lambda: f"{os.getpid()}-{secrets.token_hex(2)}", use_cache=True, replace=True
    )
    _registered = True


register_configs()


# --------------------------------------------------------------------------- rules table


def _rules_of(schema: type, prefix: str) -> list[tuple[str, Rule]]:
    out = []
    for f in dataclasses.fields(schema):
        if "rule" in f.metadata:
            out.append((f"{prefix}{f.name}", f.metadata["rule"]))
    return out


def validation_rules() -> list[tuple[str, str]]:
    """(dotted field, what is allowed) for every validated field: the documented table."""
    rows = [(k, r.describe()) for k, r in _rules_of(Config, "")]
    for section, schema in (("model", ModelConfig), ("train", TrainConfig)):
        rows += [(k, r.describe()) for k, r in _rules_of(schema, f"{section}.")]
    rows += [(k, r.describe()) for k, r in _rules_of(TrackingConfig, "tracking.")]
    rows.append(("dataset", f"one of {', '.join(DATASETS)}"))
    rows.append(("dataset.seed", "an integer >= 0"))
    rows.append(("dataset.<option>", "checked by ntk_sweep.dataset_sources.load_dataset"))
    return rows


# --------------------------------------------------------------------------- validation


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return value if value else "''"
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def invalid(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{key}={_fmt(value)} is invalid: expected {allowed}")


def _value(node: DictConfig, key: str, dotted: str) -> Any:
    try:
        value = node[key]
    except Exception as exc:  # unresolvable interpolation, missing value
        raise ConfigError(f"{dotted} could not be resolved: {_first_line(exc)}") from None
    if isinstance(value, ListConfig | DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    return value


def _check_section(node: DictConfig, schema: type, prefix: str) -> None:
    for key, r in _rules_of(schema, ""):
        if key not in node:
            continue
        value = _value(node, key, f"{prefix}{key}")
        if r.kind == "choice" and str(value) in ("True", "False"):  # CLI true -> str "True"
            value = str(value).lower()
        if not r.check(value):
            raise invalid(f"{prefix}{key}", value, r.describe())


def figure_set(cfg: DictConfig) -> str:
    """The figure set a run draws (figures.FIGURE_SETS) from `tracking.figures`, where the
    booleans of the earlier option mean all (true) and none (false)."""
    value = str(cfg.tracking.figures).lower()  # the CLI's `false` arrives as "False"
    return {"true": "all", "false": "none"}.get(value, value)


def analytic_enabled(cfg: DictConfig) -> bool:
    """Whether the run computes the infinite-width NTK (train.analytic and the model)."""
    mode = str(cfg.train.analytic).lower()
    defined = (
        cfg.model.activation in ANALYTIC_ACTIVATIONS
        and cfg.model.parameterization in ANALYTIC_PARAMETERIZATIONS
    )
    return mode == "true" or (mode == "auto" and defined)


# Keys a composed config may hold besides the schema's: Hydra's own node (in the callback's
# view of a multirun's config).
_EXTRA_TOP_LEVEL_KEYS = ("hydra",)
_SECTION_SCHEMAS: dict[str, type] = {
    "model": ModelConfig,
    "train": TrainConfig,
    "tracking": TrackingConfig,
}


def schema_fields(dotted: str, dataset: str | None = None) -> list[str]:
    """The field names of config section `dotted` ("" for the top level, "model", "train",
    "tracking", "dataset" with the chosen `dataset`'s options); [] for an unknown section."""
    if dotted == "":
        return [f.name for f in dataclasses.fields(Config)]
    if dotted == "dataset":
        schema = DATASET_SCHEMAS.get(str(dataset))
        return [f.name for f in dataclasses.fields(schema)] if schema else []
    schema = _SECTION_SCHEMAS.get(dotted)
    return [f.name for f in dataclasses.fields(schema)] if schema else []


def unknown_field_hint(dotted: str, dataset: str | None = None) -> str:
    """`did you mean width?` (difflib) for an unknown dotted key, else the section's fields."""
    section, _, key = dotted.rpartition(".")
    names = schema_fields(section, dataset)
    if not names and section:  # a misspelt section: `modle.width` -> model.width
        head, _, rest = dotted.partition(".")
        close = difflib.get_close_matches(head, schema_fields(""), n=1, cutoff=0.6)
        if not close:
            return ""
        fixed = f"{close[0]}.{rest}"
        return unknown_field_hint(fixed, dataset) or f"did you mean {fixed}?"
    if key in names:  # the key exists: the section was misspelt, the key is right
        return f"did you mean {dotted}?"
    if not names:
        return ""
    prefix = f"{section}." if section else ""
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"did you mean {prefix}{close[0]}?"
    where = {"": "the top level has", "dataset": f"dataset={dataset} has"}.get(
        section, f"{section} has"
    )
    return f"{where} {', '.join(names)}"


def _check_known_keys(cfg: DictConfig) -> None:
    """Every key must be a schema field: `+widht=10` or `+model.widht=10` (the `+` adds a key
    that struct mode would refuse) is an error naming the key and the closest field."""
    dataset = cfg.dataset.get("name") if isinstance(cfg.get("dataset"), DictConfig) else None
    checks: list[tuple[str, Any, list[str]]] = [
        ("", cfg, [*schema_fields(""), *_EXTRA_TOP_LEVEL_KEYS])
    ]
    for section in (*_SECTION_SCHEMAS, "dataset"):
        node = cfg.get(section)
        if isinstance(node, DictConfig) and (section != "dataset" or dataset in DATASET_SCHEMAS):
            checks.append((section, node, schema_fields(section, dataset)))
    for section, node, names in checks:
        for key in node:
            if key not in names:
                dotted = f"{section}.{key}" if section else str(key)
                value = OmegaConf.select(node, str(key), throw_on_resolution_failure=False)
                shown = "..." if isinstance(value, DictConfig | ListConfig) else _fmt(value)
                raise ConfigError(
                    f"{dotted}={shown} is invalid: no such config field; "
                    f"{unknown_field_hint(dotted, dataset)}"
                )


def validate(cfg: DictConfig) -> None:
    """Check every field against its rule and the cross-field constraints.

    Raises ConfigError (one line). Dataset options are checked by `load_data`.
    """
    _check_known_keys(cfg)
    _check_section(cfg, Config, "")
    _check_section(cfg.model, ModelConfig, "model.")
    _check_section(cfg.train, TrainConfig, "train.")
    _check_section(cfg.tracking, TrackingConfig, "tracking.")
    ds = cfg.dataset
    if not isinstance(ds, DictConfig) or "name" not in ds:
        raise ConfigError(f"dataset is missing: expected one of {', '.join(DATASETS)}")
    name = _value(ds, "name", "dataset.name")
    if name not in DATASETS:
        raise invalid("dataset.name", name, f"one of {', '.join(DATASETS)}")
    schema = OmegaConf.get_type(ds)
    if schema in DATASET_SCHEMAS.values() and schema is not DATASET_SCHEMAS[name]:
        chosen = next(k for k, v in DATASET_SCHEMAS.items() if v is schema)
        raise ConfigError(
            f"dataset.name={name} does not match the selected dataset {chosen}: choose a "
            f"dataset with dataset={name}, not dataset.name={name}"
        )
    seed = _value(ds, "seed", "dataset.seed") if "seed" in ds else 0
    if not Rule("int", minimum=0).check(seed):
        raise invalid("dataset.seed", seed, "an integer >= 0")

    _check_optimizer(cfg.train, int(cfg.model.outputs))
    sizes = declared_sizes(name, dataset_options(cfg)[2])
    if sizes is not None:  # generated data: its size is known before it exists
        check_memory(cfg, **sizes)
    if cfg.train.backend == "fused":
        from ntk_sweep.core.network import fused_available

        if cfg.model.depth != 1:
            raise ConfigError(
                f"train.backend=fused is invalid with model.depth={cfg.model.depth}: the fused "
                "step needs one hidden layer (use train.backend=auto or numpy)"
            )
        if not fused_available():
            raise ConfigError(
                "train.backend=fused is invalid here: numba is not installed "
                "(use train.backend=auto or numpy)"
            )

    analytic = str(cfg.train.analytic).lower()
    if analytic == "true":
        act, par = cfg.model.activation, cfg.model.parameterization
        if act not in ANALYTIC_ACTIVATIONS:
            raise ConfigError(
                f"train.analytic=true is invalid with model.activation={act}: the "
                f"infinite-width NTK has a closed form only for activation "
                f"{', '.join(ANALYTIC_ACTIVATIONS)} (use train.analytic=auto or false)"
            )
        if par not in ANALYTIC_PARAMETERIZATIONS:
            raise ConfigError(
                f"train.analytic=true is invalid with model.parameterization={par}: the "
                f"infinite-width NTK is defined only for parameterization "
                f"{', '.join(ANALYTIC_PARAMETERIZATIONS)} (use train.analytic=auto or false)"
            )


def _check_optimizer(train: DictConfig, outputs: int) -> None:
    """The optimiser's fields together (the batch size against N: `check_with_data`)."""
    optimizer, batch_size = str(train.optimizer), train.batch_size
    if not float(train.momentum) < 1:
        raise invalid("train.momentum", float(train.momentum), "a number in [0, 1)")
    if optimizer == "gd" and batch_size is not None:
        raise ConfigError(
            f"train.batch_size={batch_size} is invalid with train.optimizer=gd (full batch): "
            "expected null, or use train.optimizer=sgd|momentum|adam"
        )
    if optimizer == "sgd" and batch_size is None:
        raise ConfigError(
            "train.batch_size=null is invalid with train.optimizer=sgd: expected an integer "
            ">= 1 (the minibatch size)"
        )
    if str(train.backend) == "fused":
        plain = optimizer == "gd" and str(train.loss) == "mse" and outputs == 1
        if not plain:
            raise ConfigError(
                f"train.backend=fused is invalid with train.optimizer={optimizer}, "
                f"train.loss={train.loss}, model.outputs={outputs}: the fused step is full-batch "
                "gd on the mse loss of one output (use train.backend=auto or numpy)"
            )


def kernel_form_of(cfg: DictConfig, n_train: int, n_test: int) -> str:
    """K > 1 outputs: "full" where the largest empirical NTK of the run, (test, train) or
    (train, train), fits `train.kernel_budget_mb`, else "mean" (output-averaged)."""
    from ntk_sweep.core.kernels import output_kernel_within

    budget = int(float(cfg.train.kernel_budget_mb) * 2**20)
    return output_kernel_within(max(n_train, n_test), n_train, int(cfg.model.outputs), budget)


def _shortcut_name(cfg: DictConfig, section: str, key: str) -> str:
    """`width` where model.width is the top-level shortcut's value, else `model.width`."""
    top = cfg.get(key)
    return key if top is not None and top == cfg[section][key] else f"{section}.{key}"


def check_memory(cfg: DictConfig, *, n_train: int, n_test: int, input_dim: int) -> None:
    """Refuse a run whose estimated peak memory (`core.memory.peak_bytes`) exceeds what this
    machine has (`machine.machine_memory`): one line with the estimate, its main parts and
    the fields that drive it (those whose halving would save a quarter of it)."""
    from ntk_sweep.core.memory import format_bytes, peak_bytes
    from ntk_sweep.machine import machine_memory

    m, t = cfg.model, cfg.train
    sizes = {
        "width": int(m.width),
        "depth": int(m.depth),
        "n_train": int(n_train),
        "n_test": int(n_test),
    }

    def estimate(**change: int) -> dict[str, int]:
        s = {**sizes, **change}
        return peak_bytes(
            **s,
            input_dim=int(input_dim),
            outputs=int(m.outputs),
            full_kernel=kernel_form_of(cfg, s["n_train"], s["n_test"]) == "full",
            test_kernel_points=int(t.test_kernel_points),
            itemsize=np.dtype(str(m.dtype)).itemsize,
            optimizer=str(t.optimizer),
            analytic=analytic_enabled(cfg),
            n_log=len(compute_log_steps(int(t.steps), int(t.n_log_points), t.snapshot_steps)),
        )

    parts = estimate()
    total = sum(parts.values())
    available, source = machine_memory()
    if total <= available:
        return
    names = {
        "width": _shortcut_name(cfg, "model", "width"),
        "depth": _shortcut_name(cfg, "model", "depth"),
        "n_train": "dataset.n_train" if "n_train" in cfg.dataset else "",
        "n_test": "dataset.n_test" if "n_test" in cfg.dataset else "",
    }
    drivers = [
        key
        for key, value in sizes.items()
        if value > 1 and sum(estimate(**{key: value // 2}).values()) <= 0.75 * total
    ]
    # of those, the ones set above their defaults (width=10**9, not the default n_test=200)
    options = DATASET_OPTIONS.get(str(cfg.dataset.get("name")), {})
    defaults = {"width": Config.width, "depth": Config.depth, **options}
    # (a size the config does not set, e.g. paper_toy's 4 training rows, is never "raised")
    raised = [
        k for k in drivers if names[k] and (not _is_int(defaults.get(k)) or sizes[k] > defaults[k])
    ]
    drivers = raised or drivers
    rows = {"n_train": "training rows", "n_test": "test rows"}
    lead = " ".join(
        f"{names[k]}={sizes[k]}" if names[k] else f"{sizes[k]} {rows[k]}" for k in drivers
    )
    shown = ", ".join(
        f"{part} {format_bytes(b)}"
        for part, b in sorted(parts.items(), key=lambda kv: -kv[1])[:3]
        if b >= 0.01 * total
    )
    lower = " or ".join(names[k] or f"the {rows[k]}" for k in drivers) or "the run's sizes"
    raise ConfigError(
        f"{lead or 'this run'} needs about {format_bytes(total)} of memory ({shown}) but this "
        f"machine has {format_bytes(available)} {source}: lower {lower}"
    )


# The initial NTK (times N K, its trace) must leave room for its products (Gram matrices,
# eigendecomposition, squared norms): at most this, per network dtype.
KERNEL_SCALE_LIMIT = {"float64": 1e150, "float32": 1e30}


def kernel_scale(
    *,
    activation: str,
    parameterization: str,
    depth: int,
    width: int,
    sigma_w: float,
    sigma_b: float,
    alpha: float | None,
    input_sq: float,
) -> float:
    """An upper estimate of the initial NTK's diagonal (MATH.md s.3's recursion with
    E[phi^2] <= the variance (relu, linear) or 1 (erf, tanh) and E[phi'^2] <= 4/pi, times the
    width for the standard parameterization and alpha^2 for the centred model) for inputs of
    squared norm per feature `input_sq`; inf where it overflows float64."""
    with np.errstate(over="ignore", invalid="ignore"):
        sw2, sb2 = np.float64(sigma_w) ** 2, np.float64(sigma_b) ** 2
        v = sw2 * np.float64(input_sq) + sb2
        theta = sw2 * np.float64(input_sq) + 1.0
        slope = 4 / math.pi if activation == "erf" else 1.0
        for _ in range(depth):
            e_phi = 1.0 if activation in ("erf", "tanh") else v
            v = sw2 * e_phi + sb2
            theta = sw2 * e_phi + 1.0 + sw2 * slope * theta
        if parameterization == "standard":
            theta = theta * np.float64(width)
        if alpha is not None:
            theta = theta * np.float64(alpha) ** 2
        scale = max(float(theta), float(v))
    return scale if math.isfinite(scale) else math.inf


def check_scale(cfg: DictConfig, data) -> None:
    """Refuse a network whose initial kernel would overflow (one line naming the field): a huge
    `model.sigma_w` / `sigma_b` / `alpha`, or inputs of huge norm."""
    m = cfg.model
    with np.errstate(over="ignore", invalid="ignore"):
        sq = max(
            float(np.max(np.einsum("ij,ij->i", x, x))) / data.input_dim
            for x in (data.x_train, data.x_test)
        )
    settings = {
        "sigma_w": float(m.sigma_w),
        "sigma_b": float(m.sigma_b),
        "alpha": None if m.get("alpha") is None else float(m.alpha),
        "input_sq": sq if math.isfinite(sq) else math.inf,
    }

    def scale(**change: Any) -> float:
        return kernel_scale(
            activation=str(m.activation),
            parameterization=str(m.parameterization),
            depth=int(m.depth),
            width=int(m.width),
            **{**settings, **change},
        ) * (data.n_train * int(m.outputs))

    dtype = str(m.dtype)
    limit = KERNEL_SCALE_LIMIT.get(dtype, KERNEL_SCALE_LIMIT["float64"])
    total = scale()
    if total <= limit:
        return
    # the settings above 1 whose reset to 1 alone brings the kernel within range, else all of them
    large = [k for k, v in settings.items() if v is not None and v > 1]
    drivers = [k for k in large if scale(**{k: 1.0}) <= limit] or large
    names = {k: f"model.{k}={_fmt(settings[k])}" for k in ("sigma_w", "sigma_b", "alpha")}
    names["input_sq"] = f"the inputs of dataset={data.name} (largest |x|^2/d {sq:.3g})"
    lower = {k: f"model.{k}" for k in ("sigma_w", "sigma_b", "alpha")}
    lower["input_sq"] = "the inputs' scale (standardize them)"
    raise ConfigError(
        f"{' and '.join(names[k] for k in drivers) or 'this network'} would overflow the initial "
        f"NTK (N K x its scale about {total:.3g}; {dtype} kernels and their products need at "
        f"most {limit:.0e}): lower {' or '.join(lower[k] for k in drivers) or 'model.sigma_w'}"
    )


def check_with_data(cfg: DictConfig, data) -> None:
    """The fields that depend on the loaded dataset (ConfigError, one line): the loss against
    the task, the batch size against the N training samples, the initial kernel's scale, the
    run's memory."""
    if str(cfg.train.loss) == "xent" and not data.is_classification:
        raise ConfigError(
            f"train.loss=xent is invalid with dataset={data.name}: the cross-entropy needs class "
            "labels (a classification dataset: digits, digits10, or npz/openml with "
            "task=classification); use train.loss=mse"
        )
    batch_size = cfg.train.batch_size
    if batch_size is not None and int(batch_size) > data.n_train:
        raise invalid(
            "train.batch_size",
            batch_size,
            f"an integer in [1, {data.n_train}] (the dataset's training samples) or null",
        )
    check_scale(cfg, data)
    check_memory(cfg, n_train=data.n_train, n_test=data.n_test, input_dim=data.input_dim)


def dataset_options(cfg: DictConfig) -> tuple[str, int, dict[str, Any]]:
    """(name, data seed, options for load_dataset) of the config's dataset."""
    ds = OmegaConf.to_container(cfg.dataset, resolve=True)
    assert isinstance(ds, dict)
    name = ds.pop("name")
    seed = int(ds.pop("seed", 0))
    return name, seed, ds


# Dataset options that name a file or folder: relative ones are taken from the launch directory.
PATH_OPTIONS = ("path", "data_home")


def load_data(cfg: DictConfig, base_dir: str | None = None):
    """Load the dataset of `cfg`; its option errors become one-line ConfigErrors.

    A relative `path` (csv, npz) or `data_home` (openml) is taken relative to `base_dir` (the
    launch directory). Classification targets follow the training loss `train.loss` (mse
    where the config has none; `datasets.class_targets`).
    """
    from ntk_sweep.dataset_sources import load_dataset

    name, seed, options = dataset_options(cfg)
    for option in PATH_OPTIONS:
        path = options.get(option)
        if base_dir and isinstance(path, str) and path.strip():
            options[option] = os.path.join(base_dir, os.path.expanduser(path.strip()))
    loss = cfg.train.get("loss", "mse") if "train" in cfg else "mse"
    try:
        data = load_dataset(name, seed=seed, loss=str(loss), **options)
    except ValueError as exc:
        raise ConfigError(_dataset_message(name, options, exc)) from None
    outputs = cfg.model.get("outputs", 1) if "model" in cfg else 1
    if data.n_outputs != outputs:
        what = f"{data.n_classes} classes" if data.is_classification else "targets"
        raise ConfigError(
            f"dataset={name} has {data.n_outputs}-output targets ({what}, y of shape "
            f"{data.y_train.shape}) but the model has model.outputs={outputs}: multi-output "
            f"training needs model.outputs={data.n_outputs}"
        )
    return data


def _dataset_message(name: str, options: dict[str, Any], exc: Exception) -> str:
    msg = _first_line(exc)
    for option in sorted(options, key=len, reverse=True):
        if re.match(rf"{re.escape(option)}\b", msg):
            return f"dataset.{msg} (dataset={name})"
    return f"dataset={name} is invalid: {msg}"


# --------------------------------------------------------------------------- log steps


def compute_log_steps(
    steps: int, n_points: int = 20, snapshot_steps: tuple[int, ...] | list[int] = ()
) -> list[int]:
    """Union of ~n_points geometric steps from 0 to `steps` and the snapshot steps <= steps."""
    geo = np.unique(np.round(np.geomspace(1, steps, max(n_points - 1, 1))).astype(int))
    chosen = {0, int(steps), *(int(s) for s in geo)}
    chosen |= {int(s) for s in snapshot_steps if 0 <= int(s) <= steps}
    return sorted(chosen)


def nearest_step(log_steps: list[int], step: int) -> int:
    """The logged step closest to `step` (the earlier one on a tie)."""
    return min(log_steps, key=lambda s: (abs(s - step), s))


# --------------------------------------------------------------------------- hydra errors


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


_TYPE_NAMES = {
    "Integer": "an integer",
    "Float": "a number",
    "Boolean": "true or false",
    "String": "a string",
}


def _float_or_none(text: str) -> float | None:
    """The finite number `text` spells (`1e3` -> 1000.0), else None."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _no_such_field(dotted: str, detail: str) -> str:
    hint = unknown_field_hint(dotted)
    return f"{dotted}: no such config field ({detail})" + (f"; {hint}" if hint else "")


def describe_hydra_error(exc: BaseException) -> str:
    """One line for a Hydra/OmegaConf composition error, naming the field and what is allowed."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, ConfigError):
        return _first_line(exc)
    if isinstance(exc, MissingConfigException):
        missing = exc.missing_cfg_file or ""
        options = [o for o in (exc.options or []) if not o.endswith(SCHEMA_SUFFIX)]
        if "/" in missing and options:
            group, name = missing.rsplit("/", 1)
            return f"{group}={name} is invalid: expected one of {', '.join(sorted(options))}"
        return _one_line(str(exc).split("\n\n")[0])
    if isinstance(exc, OverrideParseException):
        return f"cannot parse override '{exc.override}': {_one_line(exc.message)}"
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OmegaConfBaseException):
        key = getattr(cause, "full_key", None)
        text = str(cause).split("\n")[0].strip()
        m = re.search(r"Error merging override (\S+)", str(exc))
        override = m.group(1) if m else None
        conv = re.search(r"could not be converted to (\w+)", text)
        if key and (conv or "is not a valid bool" in text):
            value = override.split("=", 1)[1] if override and "=" in override else "?"
            expected = _TYPE_NAMES.get(conv.group(1), conv.group(1)) if conv else "true or false"
            number = _float_or_none(value)
            if conv and conv.group(1) == "Integer" and number is not None and number.is_integer():
                return f"{key}={value} is invalid: expected an integer (write {int(number)})"
            return f"{key}={value} is invalid: expected {expected} ({text})"
        if "not in struct" in text or "Key '" in text:
            m2 = re.search(r"Could not override '([^']+)'", str(exc))
            target = m2.group(1) if m2 else key
            return _no_such_field(str(target), text)
        return _one_line(f"{_first_line(exc)}: {text}")
    text = str(exc)
    m = re.search(r"Could not override '([^']+)'", text)
    if m:
        return _no_such_field(m.group(1), _one_line(text.splitlines()[-1]))
    return _one_line(text)
