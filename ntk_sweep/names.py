"""Short names of config keys, shared by run names (:mod:`ntk_sweep.sweep_ui`) and the group
labels of the aggregate (:mod:`ntk_sweep.aggregate`): ``model.activation`` -> ``act``,
``model.parameterization`` -> ``param``, other keys by their last dotted component. No
dependencies, so the aggregate can import it without Hydra."""

from __future__ import annotations

from collections.abc import Iterable

# Short names in run names, in the order they appear (other keys follow, alphabetically, by
# their last dotted component). width and seed are always shown, from the resolved config.
SHORT_KEYS: dict[str, str] = {
    "width": "w",
    "model.width": "w",
    "seed": "s",
    "lr": "lr",
    "train.lr": "lr",
    "depth": "depth",
    "model.depth": "depth",
    "model.activation": "act",
    "model.parameterization": "param",
    "model.sigma_w": "sigma_w",
    "model.sigma_b": "sigma_b",
    "train.steps": "steps",
    "dataset": "data",
    "dataset.seed": "data_seed",
}
ALWAYS_SHOWN = ("w", "s")


def last_component(key: str) -> str:
    """`model.foo` -> `foo`, `~model.foo` -> `~foo` (a deletion stays visible)."""
    bare = key.lstrip("~")
    return key[: len(key) - len(bare)] + bare.rsplit(".", 1)[-1]


def short_names(keys: Iterable[str], reserved: Iterable[str] = ALWAYS_SHOWN) -> dict[str, str]:
    """Short name per key; keys whose short names would collide (with each other or with a
    ``reserved`` name: run names always show ``w`` and ``s``) keep their full name."""
    keys = list(dict.fromkeys(keys))
    short = {k: SHORT_KEYS.get(k) or last_component(k) for k in keys}
    taken = [short[k] for k in keys] + list(reserved)
    return {k: (s if taken.count(s) == 1 else k) for k, s in short.items()}
