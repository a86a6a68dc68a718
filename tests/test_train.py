"""Prune-then-train end to end on real Fashion-MNIST (tiny config), resume and refusal."""

import json
import os

import jax
import numpy as np
import pytest

import prospr_jax as pj
from configs import test as test_config
from prospr_jax.experiment import train


def _config(data_dir, **prune):
  config = test_config.get_config()
  config.data_dir = data_dir
  config.prune.update(prune)
  return config


def test_prune_and_train_writes_results_and_keeps_pruned_weights_zero(
    tmp_path, fashion_mnist_data_dir):
  config = _config(fashion_mnist_data_dir)
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(config, workdir)

  with open(os.path.join(workdir, "results.json")) as f:
    on_disk = json.load(f)
  assert on_disk["final_test_top1"] == results["final_test_top1"]
  # A short run on real Fashion-MNIST learns: far above the 10% of chance.
  assert results["final_test_top1"] > 0.4
  assert set(on_disk) >= {"config", "best_test_top1", "density", "prune_seconds",
                          "train_seconds", "history", "connectivity", "provenance"}
  assert on_disk["provenance"]["git_commit"] is None or len(on_disk["provenance"]["git_commit"]) == 40
  # LeNet-300-100 at 90%: every layer keeps weights on input-output paths.
  assert 0.0 < on_disk["connectivity"]["effective_density/total"] <= 0.1 + 1e-9
  assert on_disk["connectivity"]["disconnected_layers"] == []

  state = train.load_run(workdir)[2]
  masks = pj.load_masks(os.path.join(workdir, "masks.npz"), state.params)
  n = 784 * 300 + 300 * 100 + 100 * 10  # LeNet-300-100 kernels
  kept = sum(int(m.sum()) for path, m in jax.tree_util.tree_leaves_with_path(masks)
             if pj.default_filter(path, m))
  assert kept == round((1 - config.prune.sparsity) * n)
  assert on_disk["density"]["sparsity/total"] == pytest.approx(1 - kept / n)
  for p, m, p_init in zip(jax.tree.leaves(state.params), jax.tree.leaves(masks),
                          jax.tree.leaves(state.masks)):
    np.testing.assert_array_equal(m, p_init)  # the checkpointed masks are the saved masks
    assert np.all(np.asarray(p)[~np.asarray(m)] == 0.0)
    assert np.any(np.asarray(p)[np.asarray(m)] != 0.0)


@pytest.mark.parametrize("change", [{"model": "lenet5"}, {"prune.sparsity": 0.5}])
def test_workdir_of_another_run_is_refused(tmp_path, fashion_mnist_data_dir, change):
  config = _config(fashion_mnist_data_dir)
  workdir = str(tmp_path / "run")
  train.claim_workdir(config, workdir)
  key, value = next(iter(change.items()))
  if key == "model":
    config.model = value
  else:
    config.prune.sparsity = value
  with pytest.raises(ValueError, match="different config.*(model|prune)"):
    train.train_and_evaluate(config, workdir)


@pytest.mark.parametrize("bad, match", [
    ({"model": "resnet7"}, "unknown model 'resnet7'"),
    ({"dataset": "not_a_dataset"}, "not_a_dataset"),
    ({"prune.method": "prospy"}, "Unknown pruning method 'prospy'"),
    ({"prune.sparsity": 1.2}, r"outside \[0, 1\)"),
])
def test_bad_configs_fail_clearly(tmp_path, fashion_mnist_data_dir, bad, match):
  config = _config(fashion_mnist_data_dir)
  key, value = next(iter(bad.items()))
  target, _, field = key.rpartition(".")
  (config.prune if target == "prune" else config)[field] = value
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(config, str(tmp_path / "run"))
