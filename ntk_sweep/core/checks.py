"""The argument checks shared by the core's modules, in one public home: each raises a one-line
``ValueError`` that names the argument at fault and what it allows.

Two message styles, kept as the callers' messages were:

* ``check_int``, ``check_choice``, ``check_positive`` (network, kernels, training, optimizers,
  kernel_predictions): ``"name=value is invalid: expected ..."``; they only check.
* ``int_option``, ``float_option``, ``choice_option``, ``bool_option``, ``optional_int``
  (datasets and their app-level sources): ``"option must be ..., got value"``; they return the
  value normalised (an integral float becomes an int, a NumPy bool a bool).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def check_int(name: str, value: object, minimum: int) -> None:
    """Raise ValueError unless `value` is an integer (not a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid: expected an integer >= {minimum}")


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Raise ValueError unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is invalid: allowed values are {', '.join(allowed)}")


def check_positive(name: str, value: float) -> None:
    """Raise ValueError unless `value` is a finite number > 0."""
    if not (isinstance(value, int | float | np.floating) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} is invalid: expected a finite number > 0")


def int_option(option: str, value: Any, *, minimum: int) -> int:
    """`value` as an int >= `minimum` (an integral float, as a command line may give, too)."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok and isinstance(value, numbers.Real) and not isinstance(value, bool):
        ok = math.isfinite(value) and float(value).is_integer()
    if not ok or int(value) < minimum:
        raise ValueError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def float_option(option: str, value: Any, *, minimum: float, strict: bool = False) -> float:
    """`value` as a finite float >= `minimum` (> with `strict`)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(float(value))
    ok = ok and (float(value) > minimum if strict else float(value) >= minimum)
    if not ok:
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(f"{option} must be a finite number {bound}, got {value!r}")
    return float(value)


def choice_option(option: str, value: Any, choices: tuple[str, ...]) -> str:
    """`value`, a string among `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{option} must be one of {', '.join(choices)}, got {value!r}")
    return value


def bool_option(option: str, value: Any) -> bool:
    """`value`, a bool (or NumPy bool), as a bool."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{option} must be true or false, got {value!r}")
    return bool(value)


def optional_int(option: str, value: Any) -> int | None:
    """None, or `value` as an int >= 1."""
    return None if value is None else int_option(option, value, minimum=1)
