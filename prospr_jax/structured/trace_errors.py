"""Errors of channel tracing, located at the user's source line."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import jax
import jax.extend as jex
import numpy as np

from prospr_jax.ops import conv_ops


class UnsupportedPrimitiveError(NotImplementedError):
  """The channel tracer met a primitive it cannot follow."""


# Frames in these files are the library's, not the user's: jax, numpy, this package (tracing,
# its rules, compaction) and conv_ops' convolution.
_LIBRARY_DIRS = tuple(
    os.path.dirname(m.__file__) + os.sep for m in (jax, np) if m.__file__
) + (os.path.dirname(__file__) + os.sep, conv_ops.__file__)
_LIBRARY_PACKAGES = (f"{os.sep}flax{os.sep}", f"{os.sep}jaxlib{os.sep}", f"{os.sep}optax{os.sep}")


def user_source_line(eqns: Sequence[jex.core.JaxprEqn]) -> str:
  """`file:line (function)` of the user's code that made `eqns[0]`.

  The innermost frame outside jax, flax, optax, numpy and this package, looked for in
  `eqns[0]`'s traceback, then in those of the call equations enclosing it (`eqns[1:]`,
  innermost first: the traceback of an equation inside a `jit` ends at the `jit`).
  """
  for eqn in eqns:
    for frame in getattr(eqn.source_info.traceback, "frames", None) or []:
      name = frame.file_name
      if not name.startswith(_LIBRARY_DIRS) and not any(p in name for p in _LIBRARY_PACKAGES):
        return f"{name}:{frame.line_num} ({frame.function_name})"
  return jex.source_info_util.summarize(eqns[0].source_info)


def unsupported_primitive_error(eqns: Sequence[jex.core.JaxprEqn], why: str,
                                supported: Iterable[str]) -> UnsupportedPrimitiveError:
  """The error for `eqns[0]` (enclosing call equations follow, innermost first): its primitive,
  the user's line, `why`, the `supported` primitives and how to teach the tracer a new one."""
  eqn = eqns[0]
  scope = str(eqn.source_info.name_stack)
  return UnsupportedPrimitiveError(
      f"Cannot trace channels through primitive '{eqn.primitive.name}' at "
      f"{user_source_line(eqns)}" + (f" (in {scope})" if scope else "") + f": {why}. Channel "
      f"tracing follows {', '.join(sorted(supported))}; nested jit, custom_jvp/custom_vjp and "
      "remat bodies are followed inside. Teach it this primitive with "
      "prospr_jax.structured.register_primitive_rule, rewrite that step with supported "
      "operations, or prune a model that does not use it."
  )
