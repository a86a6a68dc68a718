"""JAX's persistent compilation cache for the experiment binaries: compiled programs are written
to a directory and read back by later processes, so a second run of the same setup skips XLA
compilation (seconds to minutes for ProsPr; see docs/benchmarks.md).

Every binary in experiments/ calls `enable` once at the start of `main`: the training binaries
with `config.compile_cache_dir`, the others with their `--compile_cache_dir` flag
(`define_flag`). Every program is cached, however small or fast to compile (JAX's defaults skip
programs compiled in under a second). Entries are keyed by the program, the jax/jaxlib versions,
the backend and the compile options, so a stale entry is never used; the directory may be
deleted at any time.
"""

from __future__ import annotations

import os
import pathlib

import jax
from absl import flags

DISABLED = ""
"""The cache directory setting that turns the cache off."""


def default_cache_dir() -> str:
  """`$XDG_CACHE_HOME/prospr_jax/jax`, or `~/.cache/prospr_jax/jax` without XDG_CACHE_HOME."""
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return str(pathlib.Path(base) / "prospr_jax" / "jax")


def enable(cache_dir: str | None) -> str | None:
  """Turns JAX's persistent compilation cache on in `cache_dir` (created if missing; None:
  `default_cache_dir()`), or off for `DISABLED` (''). Call it before the first compilation.

  Returns:
    The cache directory in use, or None when the cache is off.
  """
  if cache_dir == DISABLED:
    jax.config.update("jax_compilation_cache_dir", None)
    return None
  cache_dir = str(pathlib.Path(cache_dir or default_cache_dir()).expanduser())
  pathlib.Path(cache_dir).mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", cache_dir)
  # Cache every program: by default JAX skips those compiled in under 1 s, and may raise the
  # minimum entry size for the file system (-1: no minimum, and no such override).
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
  return cache_dir


def define_flag(default: str | None) -> flags.FlagHolder:
  """Defines `--compile_cache_dir` with `default` (None: `default_cache_dir()`; '': off, as in
  the benchmark binaries, whose compile times are measured)."""
  default_text = "off" if default == DISABLED else default or default_cache_dir()
  return flags.DEFINE_string(
      "compile_cache_dir", default,
      f"JAX's persistent compilation cache directory; '' turns it off (default: {default_text}).")
