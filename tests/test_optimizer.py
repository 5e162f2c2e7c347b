"""``keras_optimizer``: what its chain hands to the rule it is given."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_suite as ox


def scale_by_value(lr):
  """A rule that needs an extra argument: the step is `lr * value * g`."""

  def update_fn(updates, state, params=None, *, value):
    del params
    return jax.tree.map(lambda g: lr * value * g, updates), state

  return optax.GradientTransformationExtraArgs(
      lambda params: optax.EmptyState(), update_fn)


@pytest.mark.parametrize("base", [
    {}, dict(gradient_accumulation_steps=2, use_ema=True, clipvalue=10.0)])
def test_extra_args_reach_a_rule_that_takes_them(base):
  """`update(..., value=v)` is forwarded through clipping, accumulation and
  weight decay to the rule, jitted; before, it was dropped and the rule
  raised for its missing argument."""
  opt = ox.keras_optimizer(scale_by_value, learning_rate=0.1, **base)
  params = {"w": jnp.array([1.0, -2.0])}
  state = opt.init(params)
  step = jax.jit(opt.update)
  grads = {"w": jnp.array([1.0, 2.0])}
  for value in (3.0, 5.0):
    updates, state = step(grads, state, params, value=jnp.float32(value))
  # The last call is an update step either way (2 calls, k = 2): the mean
  # of two equal gradients, scaled by the last value.
  np.testing.assert_allclose(updates["w"], -0.1 * 5.0 * grads["w"],
                             rtol=1e-6)


def test_factories_accept_and_ignore_extra_args():
  """Optax's contract: rules that take no extra args are not given any."""
  opt = ox.adam(0.1, weight_decay=0.1)
  params = jnp.array([1.0])
  plain, _ = opt.update(params, opt.init(params), params)
  extra, _ = opt.update(params, opt.init(params), params, value=7.0)
  np.testing.assert_array_equal(plain, extra)
