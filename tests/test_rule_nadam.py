"""What is particular to Nadam: Dozat's momentum schedule and its u_product.

Keras keeps the running product of the momentum schedule, ``u_product``, as
an optimizer variable of its own (the last one its ``build`` adds); the rule
carries it in its state. Checked here: the rule alone in an optax chain,
the scalar against Keras's variable (counting update steps under
accumulation), its import by ``state_from_keras``, and that optax's own
``nadam`` is a different algorithm.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import optax_suite as ox  # noqa: E402
from keras_oracle import keras_trajectory  # noqa: E402
from keras_oracle import make_params  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import ours_trajectory  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

STEPS = 28


def _rule_state(state):
  """The ScaleByNadamState inside a factory's state."""
  found = [s for s in jax.tree.leaves(
      state, is_leaf=lambda x: isinstance(x, ox.ScaleByNadamState))
           if isinstance(s, ox.ScaleByNadamState)]
  assert len(found) == 1
  return found[0]


def _keras_u_product(keras_opt, opt_vars):
  names = [v.name for v in keras_opt.variables]
  # Keras's unnamed `_u_product`, added last ("variable", "variable_1", ...).
  assert names[-1].startswith("variable")
  return float(opt_vars[-1])


def test_rule_alone_in_an_optax_chain_matches_keras_and_optax_nadam_does_not():
  """scale_by_nadam(lr) + optax.scale(-1) is Keras's Nadam; optax's nadam
  with the same numbers is not."""
  params = make_params(13)
  grads = varied_grads(params, STEPS, seed=13)
  kw = dict(beta_1=0.8, beta_2=0.99, epsilon=1e-6)
  expected, _ = keras_trajectory("nadam", params, grads, learning_rate=0.02,
                                 **kw)
  ours, state = ours_trajectory(
      optax.chain(ox.scale_by_nadam(0.02, **kw), optax.scale(-1.0)), params,
      grads)
  assert max_deviation(expected, ours) <= 1e-6
  assert int(state[0].count) == STEPS
  theirs, _ = ours_trajectory(
      optax.nadam(0.02, b1=0.8, b2=0.99, eps=1e-6), params, grads)
  assert max_deviation(expected, theirs) > 1e-3


def test_u_product_is_keras_and_counts_update_steps():
  """After 28 calls with 3-step accumulation (9 updates), u_product equals
  Keras's variable bit for bit and the schedule's product over 9 steps."""
  params = make_params(14)
  grads = varied_grads(params, STEPS, seed=14)
  kw = dict(learning_rate=0.01, beta_1=0.85, gradient_accumulation_steps=3)
  _, (keras_opt, opt_vars) = keras_trajectory("nadam", params, grads, **kw)
  _, state = ours_trajectory(ox.nadam(**kw), params, grads)
  rule = _rule_state(state)
  assert int(rule.count) == STEPS // 3
  assert float(rule.u_product) == _keras_u_product(keras_opt, opt_vars)
  schedule = [0.85 * (1 - 0.5 * 0.96**t) for t in range(1, STEPS // 3 + 1)]
  np.testing.assert_allclose(float(rule.u_product), np.prod(schedule),
                             rtol=1e-6)


def test_state_from_keras_reads_u_product():
  """The imported state holds Keras's u_product; with it reset to 1 the
  continued run leaves Keras's, so the import is what keeps it on course."""
  params = make_params(15)
  grads = varied_grads(params, STEPS, seed=15)
  kw = dict(learning_rate=0.02, beta_1=0.8)
  expected, _ = keras_trajectory("nadam", params, grads, **kw)
  first, (keras_opt, opt_vars) = keras_trajectory("nadam", params,
                                                  grads[:13], **kw)
  resume_at = first[-1]
  opt, state = ox.from_keras(keras_opt, resume_at, opt_vars)
  assert float(_rule_state(state).u_product) == _keras_u_product(
      keras_opt, opt_vars)
  rest, _ = _continue(opt, state, resume_at, grads[13:])
  assert max_deviation(expected[13:], rest) <= 1e-6
  reset = state._replace(inner=tuple(
      s._replace(u_product=jnp.ones([], jnp.float32))
      if isinstance(s, ox.ScaleByNadamState) else s for s in state.inner))
  wrong, _ = _continue(opt, reset, resume_at, grads[13:])
  assert max_deviation(expected[13:], wrong) > 1e-4


def _continue(opt, state, params, grads):
  @jax.jit
  def step(params, state, g):
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state

  out = []
  for g in grads:
    params, state = step(params, state, g)
    out.append(jax.tree.map(np.asarray, params))
  return out, state


def test_keras_loss_scale_optimizer_drops_u_product():
  """Keras's deviation that ours does not copy: wrapped in Keras's
  LossScaleOptimizer, Nadam's u_product is not among the optimizer's
  variables, so stateless_apply restarts it at 1 on every step, and its
  run leaves that of Keras's own Nadam on the same (finite, unscaled)
  steps, which ours follows (test_loss_scale.py)."""
  import keras  # pylint: disable=g-import-not-at-top
  params = make_params(16)
  grads = varied_grads(params, 10, seed=16)
  lso = keras.optimizers.LossScaleOptimizer(
      keras.optimizers.Nadam(0.02), initial_scale=1.0,
      dynamic_growth_steps=1000)
  wrapped, _ = keras_trajectory(lso, params, grads)
  u_product = lso.inner_optimizer._u_product  # pylint: disable=protected-access
  assert not any(v is u_product for v in lso.variables)
  plain, _ = keras_trajectory("nadam", params, grads, learning_rate=0.02)
  ours, _ = ours_trajectory(ox.loss_scale_optimizer(ox.nadam(0.02), 1.0),
                            params, grads)
  assert max_deviation(plain, ours) <= 1e-6
  assert max_deviation(plain, wrapped) > 1e-4
