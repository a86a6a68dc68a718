"""`config.prune`: which fields each method reads, and overrides that a method would ignore."""

import os
import pathlib
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

import prospr_jax as pj
from configs import default
from prospr_jax.experiment import prune_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "test.py"


class _Recorder:
  """Wraps `config.prune` and records the fields read from it."""

  def __init__(self, pc):
    self._pc, self.read = pc, set()

  def __getattr__(self, name):
    self.read.add(name)
    return getattr(self._pc, name)


@pytest.mark.parametrize("method", sorted(pj.METHODS))
def test_fields_read_cover_what_the_options_read(method):
  pc = default.get_config().prune
  pc.method = method
  fields = prune_config.fields_read(pc)
  assert ("batch_size" in fields) == ("batches" in pj.METHODS[method].needs)
  recorder = _Recorder(pc)
  prune_config.method_options(recorder)
  if "batches" in pj.METHODS[method].needs:
    prune_config.num_pruning_batches(recorder)
  assert recorder.read <= set(fields), recorder.read - set(fields)


def _overrides(*args: str) -> tuple:
  """`config.prune` and the names of its overridden fields, parsed as the binaries parse."""
  argv = ["prog", f"--config={CONFIG}", *args]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  overridden = config_flags.get_override_values(flag_values["config"])
  return flag_values.config.prune, [k.removeprefix("prune.") for k in overridden
                                    if k.startswith("prune.")]


@pytest.mark.parametrize("args, message", [
    (["--config.prune.method=snip", "--config.prune.num_steps=5"],
     r"--config.prune.num_steps would be ignored: method 'snip' reads only config.prune.\{method, "
     r"sparsity, .*num_batches\}"),
    (["--config.prune.method=dense", "--config.prune.sparsity=0.5"],
     r"--config.prune.sparsity would be ignored: method 'dense' reads only config.prune.\{method\}"),
    (["--config.prune.structured=True", "--config.prune.exclude=('head',)"],
     "--config.prune.exclude would be ignored: structured method 'prospr'"),
    (["--config.prune.method=magnitude", "--config.prune.inner_lr=0.5",
      "--config.prune.grasp_temperature=1.0"],
     "--config.prune.grasp_temperature, --config.prune.inner_lr would be ignored"),
])
def test_an_override_the_method_ignores_is_an_error(args, message):
  pc, overridden = _overrides(*args)
  with pytest.raises(ValueError, match=message):
    prune_config.check_overrides(pc, overridden)


def test_overrides_the_method_reads_pass():
  prune_config.check_overrides(*_overrides("--config.prune.num_steps=5",
                                           "--config.prune.inner_momentum=0.9"))
  prune_config.check_overrides(*_overrides("--config.prune.method=synflow",
                                           "--config.prune.synflow_rounds=10"))


def test_non_numeric_sparsity_on_the_command_line():
  with pytest.raises(flags.IllegalFlagValueError,
                     match="--config.prune.sparsity=abc: could not convert string to float"):
    _overrides("--config.prune.sparsity=abc")


def test_unknown_method_is_an_error():
  pc = default.get_config().prune
  pc.method = "prospy"
  with pytest.raises(ValueError, match="Unknown pruning method 'prospy'; choose 'dense' or"):
    prune_config.fields_read(pc)


def test_the_binary_refuses_an_ignored_override_before_any_work(tmp_path):
  proc = subprocess.run(
      [sys.executable, str(ROOT / "experiments" / "prune_and_train.py"), f"--config={CONFIG}",
       f"--workdir={tmp_path / 'run'}", "--config.prune.method=snip",
       "--config.prune.num_steps=5"],
      capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu"))
  assert proc.returncode == 1
  assert "--config.prune.num_steps would be ignored: method 'snip' reads only" in proc.stderr
  assert not (tmp_path / "run").exists()
