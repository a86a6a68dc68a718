"""An optax transformation that keeps pruned weights exactly zero during training."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from prospr_jax import masks as masks_lib


class KeepMaskedState(NamedTuple):
  """Holds the bool mask pytree, so a jitted step reads it as an input, not a constant."""

  masks: Any


def keep_masked(masks: Any) -> optax.GradientTransformation:
  """Zeroes the updates of pruned weights: `updates <- where(masks, updates, 0)`.

  Put it first in an `optax.chain` (before momentum, weight decay and the learning rate) and
  start from masked params (`apply_masks(params, masks)`): the momentum buffers of pruned
  weights then stay zero, decoupled weight decay adds `wd * 0`, and pruned weights stay exactly
  zero for the whole run. `where` (not a product) keeps a NaN/inf gradient of a pruned weight
  out of the update.

  Args:
    masks: a bool (or 0/1) mask pytree with the params' structure; leaves broadcast to params.
      `init` checks the structure and stores the masks (as bool arrays) in the state.
  """

  def init_fn(params: Any) -> KeepMaskedState:
    masks_lib.check_masks(params, masks)
    return KeepMaskedState(jax.tree.map(lambda m: jnp.asarray(m, bool), masks))

  def update_fn(updates: Any, state: KeepMaskedState, params: Any = None):
    del params
    new = jax.tree.map(
        lambda u, m: jnp.where(m, u, jnp.zeros((), u.dtype)), updates, state.masks
    )
    return new, state

  return optax.GradientTransformation(init_fn, update_fn)
