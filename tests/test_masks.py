"""Mask pytrees: exact counts, allocations, determinism, errors, density, save/load."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import prospr_jax as pj
from prospr_jax import masks as masks_lib


def _params():
  k = jax.random.split(jax.random.PRNGKey(0), 3)
  return {
      "conv": {"kernel": jax.random.normal(k[0], (3, 3, 4, 8)), "bias": jnp.zeros(8)},
      "dense": {"kernel": jax.random.normal(k[1], (72, 20)), "bias": jnp.zeros(20)},
      "head": {"kernel": jax.random.normal(k[2], (20, 10)), "bias": jnp.zeros(10)},
  }


def _scores(params, seed=1):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(treedef, [jax.random.uniform(k, p.shape) for k, p in zip(keys, leaves)])


def _kept(masks, filter_fn=pj.default_filter):
  return sum(int(m.sum()) for path, m in jax.tree_util.tree_leaves_with_path(masks)
             if filter_fn(path, m))


@pytest.mark.parametrize("sparsity", [0.0, 0.2, 0.9, 0.98, 0.999])
def test_global_top_k_keeps_exact_count_and_structure(sparsity):
  params = _params()
  n = 3 * 3 * 4 * 8 + 72 * 20 + 20 * 10
  masks = pj.masks_from_scores(_scores(params), sparsity, min_kept_per_layer=0)
  assert jax.tree.structure(masks) == jax.tree.structure(params)
  assert _kept(masks) == round((1 - sparsity) * n)
  for m, p in zip(jax.tree.leaves(masks), jax.tree.leaves(params)):
    assert m.dtype == jnp.bool_ and m.shape == p.shape
  assert all(bool(m.all()) for m in (masks["conv"]["bias"], masks["head"]["bias"]))


def test_global_top_k_keeps_the_highest_scores():
  params = _params()
  scores = _scores(params)
  masks = pj.masks_from_scores(scores, 0.9)
  flat_s = np.concatenate([np.ravel(scores[k]["kernel"]) for k in ("conv", "dense", "head")])
  flat_m = np.concatenate([np.ravel(masks[k]["kernel"]) for k in ("conv", "dense", "head")])
  assert flat_s[flat_m].min() > flat_s[~flat_m].max()


def test_ties_break_deterministically_towards_earlier_entries():
  params = _params()
  scores = jax.tree.map(jnp.ones_like, params)
  a = pj.masks_from_scores(scores, 0.5, min_kept_per_layer=0)
  b = pj.masks_from_scores(scores, 0.5, min_kept_per_layer=0)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  n = 3 * 3 * 4 * 8 + 72 * 20 + 20 * 10
  # Tree order is conv, dense, head: the first n/2 flattened entries are kept.
  assert bool(a["conv"]["kernel"].all()) and not bool(a["head"]["kernel"].any())
  assert _kept(a) == n // 2


def test_same_key_gives_same_random_mask_and_other_key_differs():
  params = _params()
  a = pj.prune("random", params, 0.9, key=jax.random.PRNGKey(7))
  b = pj.prune("random", params, 0.9, key=jax.random.PRNGKey(7))
  c = pj.prune("random", params, 0.9, key=jax.random.PRNGKey(8))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not np.array_equal(a["dense"]["kernel"], c["dense"]["kernel"])


def test_uniform_allocation_prunes_each_layer_equally():
  params = _params()
  masks = pj.masks_from_scores(_scores(params), 0.75, allocation="uniform")
  for name in ("conv", "dense", "head"):
    k = masks[name]["kernel"]
    assert int(k.sum()) == round(0.25 * k.size)


def test_erk_densities_match_formula_and_budget():
  shapes = [(3, 3, 4, 8), (72, 20), (20, 10)]
  dens = masks_lib.erk_densities(shapes, 0.1)
  sizes = [np.prod(s) for s in shapes]
  np.testing.assert_allclose(np.dot(dens, sizes), 0.1 * sum(sizes))
  raw = [sum(s) / np.prod(s) for s in shapes]
  np.testing.assert_allclose(np.array(dens) / np.array(raw), dens[0] / raw[0])
  # A budget that would push a small layer above density 1 keeps it dense.
  dens = masks_lib.erk_densities([(1000, 1000), (4, 2)], 0.5)
  assert dens[1] == 1.0
  np.testing.assert_allclose(dens[0] * 1e6 + 8, 0.5 * (1e6 + 8))
  params = _params()
  masks = pj.masks_from_scores(_scores(params), 0.9, allocation="erk")
  np.testing.assert_allclose(_kept(masks), 0.1 * sum(sizes), atol=2)


def test_layer_collapse_is_an_error_unless_a_minimum_is_kept():
  params = _params()
  scores = _scores(params)
  scores["head"]["kernel"] = scores["head"]["kernel"] * 1e-6  # lowest everywhere
  with pytest.raises(pj.LayerCollapseError, match="head/kernel.*min_kept_per_layer"):
    pj.masks_from_scores(scores, 0.8)
  masks = pj.masks_from_scores(scores, 0.8, min_kept_per_layer=3)
  assert int(masks["head"]["kernel"].sum()) == 3
  n = 3 * 3 * 4 * 8 + 72 * 20 + 20 * 10
  assert _kept(masks) == round(0.2 * n)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan")])
def test_sparsity_outside_unit_interval_is_an_error(bad):
  with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
    pj.masks_from_scores(_scores(_params()), bad)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_scores_are_an_error(bad):
  scores = _scores(_params())
  scores["dense"]["kernel"] = scores["dense"]["kernel"].at[3, 4].set(bad)
  with pytest.raises(ValueError, match="dense/kernel contain NaN or inf|'dense/kernel' contain"):
    pj.masks_from_scores(scores, 0.5)


def test_mismatched_mask_tree_is_an_error():
  params = _params()
  masks = pj.ones_masks(params, dtype=bool)
  del masks["head"]
  with pytest.raises(ValueError, match="does not match the params tree"):
    pj.apply_masks(params, masks)
  masks = pj.ones_masks(params, dtype=bool)
  masks["dense"]["kernel"] = jnp.ones((20, 72), bool)
  with pytest.raises(ValueError, match="'dense/kernel' has shape"):
    pj.keep_masked(masks).init(params)


def test_filter_excludes_classifier_and_apply_masks_zeroes_pruned():
  params = _params()
  filter_fn = pj.kernel_filter(exclude=("head",))
  masks = pj.masks_from_scores(_scores(params), 0.9, filter_fn=filter_fn)
  assert bool(masks["head"]["kernel"].all())
  pruned = pj.apply_masks(params, masks)
  np.testing.assert_array_equal(pruned["dense"]["kernel"] == 0, ~masks["dense"]["kernel"])
  summary = pj.density_summary(masks, params, filter_fn)
  assert set(summary) == {"density/conv/kernel", "density/dense/kernel", "density/total",
                          "sparsity/total"}
  np.testing.assert_allclose(summary["sparsity/total"], 0.9, atol=1e-3)


def test_density_summary_counts_channel_masks_per_weight():
  params = _params()
  masks = pj.ones_masks(params, dtype=bool)
  masks["conv"]["kernel"] = jnp.array([True] * 2 + [False] * 6).reshape(1, 1, 1, 8)
  summary = pj.density_summary(masks, params, pj.kernel_filter(exclude=("head", "dense")))
  assert summary["density/conv/kernel"] == 0.25


def test_save_and_load_round_trip(tmp_path):
  params = _params()
  masks = pj.masks_from_scores(_scores(params), 0.9)
  pj.save_masks(tmp_path / "m.npz", masks)
  loaded = pj.load_masks(tmp_path / "m.npz", params)
  assert jax.tree.structure(loaded) == jax.tree.structure(masks)
  jax.tree.map(np.testing.assert_array_equal, masks, loaded)
  with pytest.raises(ValueError, match=r"missing \[.head/x.\]"):
    pj.load_masks(tmp_path / "m.npz", {**params, "head": {"bias": 0, "kernel": 0, "x": 0}})


def _float_masks(params):
  masks = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
  masks["dense"]["kernel"] = jnp.full((72, 20), 0.5)
  return masks


@pytest.mark.parametrize("entry_point", ["apply_masks", "keep_masked", "density_summary"])
def test_float_masks_are_refused_naming_the_leaf(entry_point):
  params = _params()
  call = {
      "apply_masks": lambda m: pj.apply_masks(params, m),
      "keep_masked": lambda m: pj.keep_masked(m).init(params),
      "density_summary": lambda m: pj.density_summary(m, params),
  }[entry_point]
  with pytest.raises(TypeError, match="mask at 'dense/kernel' has dtype float32.*bool"):
    call(_float_masks(params))


def test_load_masks_refuses_float_masks(tmp_path):
  params = _params()
  pj.save_masks(tmp_path / "m.npz", _float_masks(params))
  with pytest.raises(TypeError, match="'dense/kernel'"):
    pj.load_masks(tmp_path / "m.npz", params)


def test_a_corrupt_masks_file_is_named(tmp_path):
  params = _params()
  path = tmp_path / "masks.npz"
  pj.save_masks(path, pj.ones_masks(params, dtype=bool))
  path.write_bytes(path.read_bytes()[:40])  # truncated, as by a crash mid-write
  with pytest.raises(ValueError, match=f"{path} is not a masks file"):
    pj.load_masks(path, params)
  with pytest.raises(FileNotFoundError):
    pj.load_masks(tmp_path / "absent.npz", params)


@pytest.mark.parametrize("bad, error, message", [
    (-1, ValueError, "negative"),
    (1.5, TypeError, "must be None or an int"),
    (True, TypeError, "must be None or an int"),
    (201, ValueError, r"more than these prunable layers hold: 'head/kernel' \(200\)"),
])
def test_min_kept_per_layer_must_be_a_non_negative_int_a_layer_can_hold(bad, error, message):
  with pytest.raises(error, match=message):
    pj.masks_from_scores(_scores(_params()), 0.5, min_kept_per_layer=bad)


@pytest.mark.parametrize("allocation", ["global", "uniform", "erk"])
def test_min_kept_per_layer_larger_than_a_layer_is_refused_for_every_allocation(allocation):
  with pytest.raises(ValueError, match="more than these prunable layers hold"):
    pj.masks_from_scores(_scores(_params()), 0.5, allocation=allocation, min_kept_per_layer=500)


def test_min_kept_per_layer_beyond_the_global_budget_is_an_error():
  # 1,928 prunable entries at sparsity 0.95 keep 96; 3 layers x 40 reserved would be 120.
  with pytest.raises(ValueError, match="reserves 120 entries over 3 prunable layers, more than "
                                       "the 96"):
    pj.masks_from_scores(_scores(_params()), 0.95, min_kept_per_layer=40)
  masks = pj.masks_from_scores(_scores(_params()), 0.95, min_kept_per_layer=32)
  assert _kept(masks) == 96
  assert all(int(m.sum()) >= 32 for path, m in jax.tree_util.tree_leaves_with_path(masks)
             if pj.default_filter(path, m))


def test_non_finite_params_are_blamed_on_the_params_not_the_scores():
  params = _params()
  params["conv"]["kernel"] = params["conv"]["kernel"].at[0, 0, 0, 0].set(jnp.nan)
  with pytest.raises(ValueError, match=r"params at \['conv/kernel'\] contain NaN"):
    pj.prune("magnitude", params, 0.5)
