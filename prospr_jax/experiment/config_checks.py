"""Checks of single config fields (type and range), of unknown fields, and the leaf-by-leaf
difference of two configs: each raises a ValueError or TypeError that names the field as
`--config.<path>` takes it, so a bad run fails before any work."""

from __future__ import annotations

import contextlib
import math
import numbers
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any


class ConfigError(ValueError, TypeError):
  """A run refused before any work: a bad config field (wrong type or range, unknown name), a
  derived quantity out of range, a missing data set, or a workdir holding another run's config.

  It is both a ValueError and a TypeError, so code catching the error of the underlying check
  still does; its message is the whole explanation (binaries print it as one line).
  """


_REFUSALS = (ValueError, TypeError, FileNotFoundError)
"""What the checks of a run's config raise: a bad field, a missing data set."""


@contextlib.contextmanager
def refusing_as_config_error(prefix: str = "") -> Iterator[None]:
  """Re-raises a `_REFUSALS` error of the block as a `ConfigError` with `prefix` before its
  message (e.g. which grid point's config it is)."""
  try:
    yield
  except _REFUSALS as e:
    raise ConfigError(f"{prefix}{e}") from e


def check_int(name: str, value: Any, minimum: int, *, also: tuple[int, ...] = ()) -> None:
  """Raises TypeError unless `value` is an int (not a bool), ValueError unless it is at least
  `minimum` or one of `also` (e.g. -1 meaning 'a full pass'). `name`: the field's dotted path."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f"config.{name} must be an integer; got {value!r} "
                    f"({type(value).__name__}).")
  if value < minimum and value not in also:
    allowed = " or ".join([f">= {minimum}", *map(str, also)])
    raise ValueError(f"config.{name}={value} must be {allowed}.")


def check_number(name: str, value: Any, low: float, high: float = math.inf) -> None:
  """Raises TypeError unless `value` is a real number (not a bool), ValueError unless it lies
  in [`low`, `high`]."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(f"config.{name} must be a number; got {value!r} ({type(value).__name__}).")
  if not low <= value <= high:
    raise ValueError(f"config.{name}={value} is outside [{low}, {high}].")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
  """Raises ValueError unless `value` is one of `choices`."""
  choices = tuple(choices)
  if value not in choices:
    raise ValueError(f"config.{name}={value!r}; choose one of {choices}.")


def check_regexes(name: str, patterns: Any) -> None:
  """Raises TypeError unless `patterns` is a sequence of strings, ValueError naming the first
  one that is not a valid regular expression."""
  if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
    raise TypeError(f"config.{name} must be a tuple of regular expressions (strings); got "
                    f"{patterns!r}.")
  for pattern in patterns:
    try:
      re.compile(pattern)
    except re.error as e:
      raise ValueError(f"config.{name}: {pattern!r} is not a regular expression ({e}).") from None


def check_known_fields(name: str, section: Mapping[str, Any], known: Iterable[str]) -> None:
  """Raises ValueError naming the fields of `section` (`config.<name>`; the whole config if
  `name` is '') not in `known`, and listing the known ones."""
  known = sorted(known)
  unknown = sorted(set(section) - set(known))
  if unknown:
    where = f"config.{name}" if name else "config"
    raise ValueError(f"{where} has no field(s) {unknown}; its fields are {known}.")


def dotted_leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
  """`{dotted path: value}` of the non-dict leaves of nested dicts `tree`."""
  if not isinstance(tree, Mapping):
    return {prefix: tree}
  out = {}
  for key, value in tree.items():
    out |= dotted_leaves(value, f"{prefix}.{key}" if prefix else str(key))
  return out


def differences(old: Mapping[str, Any], new: Mapping[str, Any],
                ignore: Iterable[str] = ()) -> list[str]:
  """`'<path>: <old> (workdir) vs <new> (this run)'` for every leaf where the nested dicts `old`
  and `new` differ (a missing leaf shows as `<absent>`), sorted by path; top-level keys in
  `ignore` are skipped."""
  ignore = set(ignore)
  old_leaves, new_leaves = dotted_leaves(old), dotted_leaves(new)
  absent = "<absent>"
  return [
      f"{path}: {old_leaves.get(path, absent)!r} (workdir) vs "
      f"{new_leaves.get(path, absent)!r} (this run)"
      for path in sorted(set(old_leaves) | set(new_leaves))
      if path.split(".")[0] not in ignore and old_leaves.get(path, absent) != new_leaves.get(
          path, absent)
  ]
