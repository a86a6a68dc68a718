"""A method declared once (`MethodSpec`) works everywhere: `prune`, `structured_prune`, the
config checks, a sweep arm with real training, the study report; and the declaration is undone."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prospr_jax as pj
from conftest import TinyBNCNN, mlp_params, random_variables
from configs import test as test_config
from prospr_jax import structured
from prospr_jax.experiment import grid_sweep, prune_config, study_report
from prospr_jax.saliency import ChannelScorer, PruneInputs, from_config, registry
from prospr_jax.structured import scoring

TOY = "toy_power"


def _power_scores(inputs: PruneInputs, *, power: float = 1.0):
  """`|θ| ** power`: magnitude pruning for a positive power, its inverse for a negative one."""
  return jax.tree.map(lambda p: jnp.abs(p) ** power, inputs.params)


def _power_channel_scores(inputs: scoring.ScoreInputs, *, power: float = 1.0):
  return {g: s ** power for g, s in scoring.magnitude_channel_scores(inputs).items()}


TOY_SPEC = pj.MethodSpec(
    TOY,
    lambda inputs, sparsity, select, **options: select(_power_scores(inputs, **options), sparsity),
    options={"power": from_config("toy_power")},
    one_shot=True,
    channel_scorer=ChannelScorer(_power_channel_scores),
)


@pytest.fixture
def toy():
  """The toy method registered for one test (the only place it is declared)."""
  with pj.registered(TOY_SPEC):
    yield TOY_SPEC


def _toy_config(power: float = -1.0):
  config = test_config.get_config()
  with config.prune.unlocked():
    config.prune.toy_power = power
  config.prune.method = TOY
  return config


def test_prune_runs_the_declared_function_with_its_options(toy):
  params = mlp_params(jax.random.PRNGKey(0))
  inverse = pj.prune(TOY, params, 0.5, power=-1.0)
  expected = pj.masks_from_scores(jax.tree.map(lambda p: -jnp.abs(p), params), 0.5)
  assert jax.tree.all(jax.tree.map(np.array_equal, inverse, expected))
  assert jax.tree.all(jax.tree.map(np.array_equal, pj.prune(TOY, params, 0.5),
                                   pj.prune("magnitude", params, 0.5)))
  with pytest.raises(ValueError, match=r"'toy_power' has no option\(s\) \['num_steps'\]"):
    pj.prune(TOY, params, 0.5, num_steps=3)


def test_structured_prune_uses_the_declared_channel_scorer(toy):
  model = TinyBNCNN()
  variables = random_variables(model, (6, 6, 2))
  example = jnp.zeros((1, 6, 6, 2))
  assert TOY in structured.structured_methods()
  prune = lambda method, **options: structured.structured_prune(
      method, model, variables, None, 0.5, example_input=example, min_kept_per_group=1,
      **options)
  as_magnitude, inverse = prune(TOY, power=1.0), prune(TOY, power=-1.0)
  assert jax.tree.all(jax.tree.map(np.array_equal, as_magnitude, prune("magnitude")))
  assert not jax.tree.all(jax.tree.map(np.array_equal, as_magnitude, inverse))


def test_config_checks_read_the_declared_fields(toy):
  pc = _toy_config(power=-2.0).prune
  assert prune_config.fields_read(pc)[-2:] == ("exclude", "toy_power")
  assert prune_config.method_options(pc) == {"power": -2.0}
  assert prune_config.scoring_batchnorm_mode(pc) is None
  prune_config.check_overrides(pc, ["toy_power", "sparsity"])
  with pytest.raises(ValueError, match="--config.prune.num_steps would be ignored: method "
                                       "'toy_power' reads only"):
    prune_config.check_overrides(pc, ["num_steps"])


def test_sweep_trains_the_arm_and_the_report_lists_it(toy, tmp_path, fashion_mnist_data_dir):
  """A real training run (configs/test.py, seconds) of the toy arm, then the report tables."""
  assert registry.default_sweep_methods()[-1] == TOY
  base = _toy_config()
  base.data_dir = fashion_mnist_data_dir
  points = grid_sweep.expand_grid([TOY], [0.9], [0], include_dense=False)
  assert grid_sweep.point_config(base, points[0]).prune.toy_power == -1.0
  root = str(tmp_path / "sweep")
  summary = grid_sweep.run_sweep(base, root, points)
  assert summary.ran == points and not summary.failed
  with open(os.path.join(grid_sweep.run_dir(root, points[0]), "results.json")) as f:
    assert json.load(f)["density"]["density/total"] == pytest.approx(0.1, abs=1e-3)

  records = grid_sweep.collect_records(root)
  reference = registry.report_reference()
  records.append({**records[0], "method": reference, "workdir": "reference"})
  assert study_report.ordered_methods(records) == [reference, TOY]  # declaration order
  rows = study_report.results_table(records).splitlines()
  assert any(row.startswith(f"| {TOY} |") for row in rows)
  paired = study_report.paired_table(records).splitlines()
  assert any(row.startswith(f"| {TOY} | +0.00 (n=1) |") for row in paired)


def test_the_declaration_is_undone_after_its_block():
  with pj.registered(TOY_SPEC):
    assert TOY in pj.METHODS
  assert TOY not in pj.METHODS and TOY not in registry.default_sweep_methods()
  with pytest.raises(ValueError, match="Unknown pruning method 'toy_power'"):
    pj.prune(TOY, mlp_params(jax.random.PRNGKey(0)), 0.5)
  with pytest.raises(ValueError, match="Unknown pruning method 'toy_power'; choose 'dense'"):
    prune_config.fields_read(_toy_config().prune)


def test_bad_declarations_are_refused(toy):
  with pytest.raises(ValueError, match="'toy_power' is already registered"):
    pj.register(TOY_SPEC)
  second_reference = pj.MethodSpec("toy_reference", TOY_SPEC.fn, report_reference=True)
  with pytest.raises(ValueError, match="cannot be the report reference"):
    pj.register(second_reference)
  assert "toy_reference" not in pj.METHODS
  with pytest.raises(ValueError, match=r"needs \['labels'\], which are not PruneInputs"):
    pj.MethodSpec("toy_bad", TOY_SPEC.fn, needs=("labels",))
  with pytest.raises(ValueError, match="batchnorm_mode must be None or one of"):
    pj.MethodSpec("toy_bad", TOY_SPEC.fn, batchnorm_mode="inference")
