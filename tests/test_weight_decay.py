"""Decoupled weight decay: Keras's formula and the ways to exclude leaves."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_suite as ox

PARAMS = {"dense": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full(2, 2.0)},
          "embedding": jnp.full(3, 2.0), "steps": jnp.asarray(5)}


def test_decay_is_w_times_wd_times_lr_at_this_call():
  schedule = lambda step: 0.1 * (step + 1)
  tx = optax.chain(ox.add_decoupled_weight_decay(0.5, schedule),
                   optax.scale(-1.0))
  state = tx.init(PARAMS)
  zeros = jax.tree.map(jnp.zeros_like, PARAMS)
  for step in range(3):
    u, state = tx.update(zeros, state, PARAMS)
    np.testing.assert_allclose(u["embedding"], -2.0 * 0.5 * 0.1 * (step + 1),
                               rtol=1e-6)
    assert int(u["steps"]) == 0


def test_exclusions_by_name_by_mask_and_by_callable():
  by_name = ox.decay_mask(PARAMS, exclude_from_weight_decay=["bias", "emb"])
  assert by_name == {"dense": {"kernel": True, "bias": False},
                     "embedding": False, "steps": False}
  mask = {"dense": {"kernel": False, "bias": True}, "embedding": True,
          "steps": True}
  assert ox.decay_mask(PARAMS, mask)["dense"] == {"kernel": False,
                                                  "bias": True}
  assert ox.decay_mask(PARAMS, lambda p: mask) == ox.decay_mask(PARAMS, mask)
  assert ox.decay_mask(PARAMS, mask, ["bias"])["dense"]["bias"] is False


def test_excluded_leaves_do_not_decay_in_the_optimizer():
  opt = ox.adamax(learning_rate=0.1, weight_decay=0.5,
                  exclude_from_weight_decay=["bias"])
  zeros = jax.tree.map(jnp.zeros_like, PARAMS)
  u, _ = opt.update(zeros, opt.init(PARAMS), PARAMS)
  np.testing.assert_array_equal(u["dense"]["bias"], 0.0)
  np.testing.assert_allclose(u["dense"]["kernel"], -2.0 * 0.5 * 0.1, rtol=1e-6)


def test_array_mask_is_applied_inside_jit():
  mask = jax.tree.map(lambda p: jnp.asarray(p.ndim == 2), PARAMS)
  opt = ox.adam(learning_rate=0.1, weight_decay=0.5, weight_decay_mask=mask)
  zeros = jax.tree.map(jnp.zeros_like, PARAMS)
  u, _ = jax.jit(opt.update)(zeros, opt.init(PARAMS), PARAMS)
  np.testing.assert_array_equal(u["embedding"], 0.0)
  assert float(u["dense"]["kernel"][0, 0]) < 0


def test_needs_params():
  tx = ox.add_decoupled_weight_decay(0.1)
  with pytest.raises(ValueError, match="params"):
    tx.update({"w": jnp.ones(1)}, tx.init({"w": jnp.ones(1)}))
