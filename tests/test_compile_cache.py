"""The persistent compilation cache of the experiment binaries (`experiment.compile_cache`)."""

import os
import pathlib
import subprocess
import sys

import jax

from prospr_jax.experiment import compile_cache

_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Prunes a tiny MLP with ProsPr in a fresh process using the cache in argv[1]; prints how many
# compiled programs it read from the cache.
_PRUNE_ONCE = """
import sys
import jax
import jax.numpy as jnp
import prospr_jax as pj
from prospr_jax.experiment import compile_cache

compile_cache.enable(sys.argv[1])
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kwargs: hits.append(event) if event.endswith("/cache_hits") else None)
params = {"w": jnp.linspace(-1.0, 1.0, 32).reshape(8, 4)}
batch = {"x": jnp.ones((5, 8)), "y": jnp.zeros((5, 4))}
loss_fn = lambda p, b: jnp.mean((b["x"] @ p["w"] - b["y"]) ** 2)
jax.block_until_ready(pj.prune("prospr", params, 0.5, loss_fn=loss_fn, batches=batch,
                               num_steps=2))
print(len(hits))
"""


def _prune_in_a_new_process(cache_dir: pathlib.Path) -> int:
  """Runs `_PRUNE_ONCE` with `cache_dir`; returns its number of cache hits."""
  env = {**os.environ, "PYTHONPATH": str(_ROOT), "JAX_PLATFORMS": "cpu"}
  done = subprocess.run([sys.executable, "-c", _PRUNE_ONCE, str(cache_dir)], env=env,
                        capture_output=True, text=True, check=True, timeout=300)
  return int(done.stdout.split()[-1])


def test_a_second_process_reads_the_programs_the_first_compiled(tmp_path):
  cache_dir = tmp_path / "cache"
  assert _prune_in_a_new_process(cache_dir) == 0
  entries = sorted(p.name for p in cache_dir.iterdir())
  assert entries  # every program was written, however small
  assert _prune_in_a_new_process(cache_dir) > 0
  assert sorted(p.name for p in cache_dir.iterdir()) == entries  # nothing compiled anew


def test_default_cache_dir_is_under_the_user_cache_directory(monkeypatch, tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert compile_cache.default_cache_dir() == str(tmp_path / "prospr_jax" / "jax")
  monkeypatch.delenv("XDG_CACHE_HOME")
  assert compile_cache.default_cache_dir() == str(
      pathlib.Path.home() / ".cache" / "prospr_jax" / "jax")


def test_an_empty_directory_turns_the_cache_off(tmp_path):
  before = jax.config.jax_compilation_cache_dir
  try:
    assert compile_cache.enable(str(tmp_path / "c")) == str(tmp_path / "c")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "c")
    assert compile_cache.enable(compile_cache.DISABLED) is None
    assert jax.config.jax_compilation_cache_dir is None
  finally:
    jax.config.update("jax_compilation_cache_dir", before)
