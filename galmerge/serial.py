"""The one (de)serialiser of galmerge's configuration dataclasses to plain JSON.

:func:`to_plain` is :func:`dataclasses.asdict` with tuples as lists (JSON has no
tuples) and numpy scalars as Python numbers; :func:`from_plain` is its inverse:
unknown keys are ignored, missing ones take the field's default, and each value
is shaped by the field's type — ``tuple[...]`` fields become tuples (of floats
where the type says so) and dataclass fields are read recursively. Used by
:class:`~galmerge.conventions.Normalisation`,
:class:`~galmerge.conventions.ModelConvention` and
:class:`~galmerge.training.config.TrainConfig`.
"""

from __future__ import annotations

import dataclasses
import typing
from functools import cache
from typing import Any, TypeVar

import numpy as np

__all__ = ["from_plain", "to_plain"]

T = TypeVar("T")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def to_plain(obj: Any) -> dict[str, Any]:
    """A dataclass instance as JSON-ready dicts, lists and numbers."""
    return _plain(dataclasses.asdict(obj))


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _shaped(hint: Any, value: Any) -> Any:
    """``value`` read back as the type ``hint`` says."""
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return from_plain(hint, value)  # type: ignore[arg-type]
    if typing.get_origin(hint) is tuple and isinstance(value, list | tuple):
        args = typing.get_args(hint)
        if args and all(a is float for a in args if a is not Ellipsis):
            return tuple(float(v) for v in value)
        return tuple(value)
    return value


def from_plain(cls: type[T], data: dict[str, Any]) -> T:
    """The inverse of :func:`to_plain` for dataclass ``cls`` (unknown keys ignored)."""
    hints = _hints(cls)  # type: ignore[arg-type]  # a class is hashable; mypy cannot see it
    kw = {f.name: _shaped(hints[f.name], data[f.name])
          for f in dataclasses.fields(cls)  # type: ignore[arg-type]
          if f.name in data}
    return cls(**kw)
