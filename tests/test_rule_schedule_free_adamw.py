"""What is particular to Keras's ScheduleFreeAdamW.

What is proved here:

* ``schedule_free_eval_params`` is the average of the ``z`` iterates (the
  schedule-free ``x`` with Keras's weights ``c_t = 1/t``), recorded step by
  step from the state and averaged in float64: the formula
  ``x = (y - (1 - beta_1) z) / beta_1`` recovers it; it also equals that
  formula evaluated on Keras's own variables after a Keras run, with an
  injected ``beta_1`` changed mid-run, and ``x = y`` before the first step;
* the rule alone (``scale_by_schedule_free_adamw`` chained with
  ``optax.scale(-1)``, ``params`` passed) follows Keras under a schedule and
  with warmup; ``optax.contrib.schedule_free_adamw`` does not;
* with weight decay the step starts from the decayed parameters, as Keras's
  does: the factory matches Keras, the rule merely chained after the base
  decay does not;
* ``update`` without ``params`` says it needs them; ``beta_1`` is in (0, 1].

Keras comparisons use ``atol = rtol = 1e-6``.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import optax_suite as ox  # noqa: E402
from keras_oracle import keras_trajectory  # noqa: E402
from keras_oracle import make_params  # noqa: E402
from keras_oracle import assert_trajectories_match  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402

# The rule alone steps from a point interpolated between the parameters and
# z, so a one-ulp difference in a step feeds every later step: measured 5
# ulps of the parameters' magnitude after 24 steps against Keras (the
# factory's parity runs in test_aliases stay within keras_oracle.ULPS).
SF_ULPS = 8
from keras_oracle import ours_trajectory  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

STEPS = 28


def _sf_state(state):
  is_sf = lambda x: isinstance(x, ox.ScaleByScheduleFreeAdamwState)
  return [x for x in jax.tree.leaves(state, is_leaf=is_sf) if is_sf(x)][0]


def test_eval_params_are_the_average_of_the_z_iterates():
  params = make_params(51)
  grads = varied_grads(params, STEPS, seed=51)
  opt = ox.schedule_free_adamw(0.01, beta_1=0.7, warmup_steps=3)
  state = opt.init(params)
  x0 = ox.schedule_free_eval_params(params, state)
  assert max_deviation([x0], [params]) < 1e-6  # x = y before any step
  step = jax.jit(opt.update)
  p, zs = params, []
  for g in grads:
    u, state = step(g, state, p)
    p = optax.apply_updates(p, u)
    zs.append(jax.tree.map(lambda z: np.asarray(z, np.float64),
                           _sf_state(state).momentum))
  mean_z = jax.tree.map(lambda *z: np.mean(z, axis=0), *zs)
  x = ox.schedule_free_eval_params(p, state)
  assert max_deviation([mean_z], [x]) < 1e-5
  # And x is not y: evaluating at the average is a different point.
  assert max_deviation([x], [p]) > 1e-3


def test_eval_params_formula_on_keras_variables_with_injected_beta_1():
  params = make_params(52)
  grads = varied_grads(params, STEPS, seed=52)
  expected, (keras_opt, opt_vars) = keras_trajectory(
      "schedule_free_adamw", params, grads, learning_rate=0.02, beta_1=0.6)
  names = [v.name for v in keras_opt.variables]
  z_keras = [np.asarray(v, np.float64) for v, n in zip(opt_vars, names)
             if n.endswith("momentum")]
  x_keras = [(np.asarray(y, np.float64) - 0.4 * z) / 0.6 for y, z in zip(
      jax.tree.leaves(expected[-1]), z_keras)]
  opt = optax.inject_hyperparams(ox.schedule_free_adamw)(
      learning_rate=0.02, beta_1=0.9)
  state = opt.init(params)
  step = jax.jit(opt.update)
  p = params
  for t, g in enumerate(grads):
    if t == 5:  # beta_1 was 0.9 for 5 steps, 0.6 from then on
      state.hyperparams["beta_1"] = jnp.asarray(0.6, jnp.float32)
    u, state = step(g, state, p)
    p = optax.apply_updates(p, u)
  assert float(_sf_state(state).beta_1) == np.float32(0.6)
  x = jax.tree.leaves(ox.schedule_free_eval_params(p, state))
  y = jax.tree.leaves(p)
  z = jax.tree.leaves(_sf_state(state).momentum)
  for xi, yi, zi in zip(x, y, z):  # the formula, in float64
    want = (np.asarray(yi, np.float64) - (1 - np.float32(0.6)) * np.asarray(
        zi, np.float64)) / np.float32(0.6)
    np.testing.assert_allclose(xi, want, rtol=1e-6, atol=1e-6)
  # A constant 0.6 from the start is Keras's run; its x is Keras's x.
  ours, state = ours_trajectory(
      ox.schedule_free_adamw(0.02, beta_1=0.6), params, grads)
  assert_trajectories_match(expected, ours, ulps=SF_ULPS)
  x_ours = jax.tree.leaves(ox.schedule_free_eval_params(ours[-1], state))
  assert max_deviation([x_keras], [x_ours]) < 1e-5


def test_rule_alone_under_a_schedule_with_warmup_matches_keras_not_optax():
  params = make_params(53)
  grads = varied_grads(params, STEPS, seed=53)
  expected, _ = keras_trajectory(
      "schedule_free_adamw", params, grads, warmup_steps=6, beta_1=0.8,
      learning_rate=keras.optimizers.schedules.ExponentialDecay(0.05, 4, 0.7))
  sched = optax.exponential_decay(0.05, transition_steps=4, decay_rate=0.7)
  rule = optax.chain(
      ox.scale_by_schedule_free_adamw(sched, beta_1=0.8, warmup_steps=6),
      optax.scale(-1.0))
  ours, _ = ours_trajectory(rule, params, grads)
  assert_trajectories_match(expected, ours, ulps=SF_ULPS)
  plain, _ = keras_trajectory("schedule_free_adamw", params, grads,
                              learning_rate=0.01)
  theirs, _ = ours_trajectory(
      optax.contrib.schedule_free_adamw(0.01, warmup_steps=0, b1=0.9,
                                        b2=0.999, eps=1e-8, weight_decay=0.0),
      params, grads)
  assert max_deviation(plain, theirs) > 1e-3


def test_weight_decay_steps_from_the_decayed_point():
  params = make_params(54)
  grads = varied_grads(params, STEPS, seed=54)
  kw = dict(learning_rate=0.05, weight_decay=0.5)
  expected, _ = keras_trajectory("schedule_free_adamw", params, grads,
                                 exclude=["bias"], **kw)
  ours, _ = ours_trajectory(
      ox.schedule_free_adamw(**kw, exclude_from_weight_decay=["bias"]),
      params, grads)
  assert_trajectories_match(expected, ours, ulps=SF_ULPS)
  naive, _ = ours_trajectory(ox.keras_optimizer(
      ox.scale_by_schedule_free_adamw, **kw,
      exclude_from_weight_decay=["bias"]), params, grads)
  assert max_deviation(expected, naive) > 1e-4


def test_params_needed_and_beta_1_range():
  opt = ox.schedule_free_adamw()
  state = opt.init(jnp.ones(2))
  with pytest.raises(ValueError, match="`params` must be passed"):
    opt.update(jnp.ones(2), state)
  ox.schedule_free_adamw(beta_1=1.0)
  for bad in (0.0, -0.1, 1.5):
    with pytest.raises(ValueError, match=f"beta_1={bad!r}"):
      ox.schedule_free_adamw(beta_1=bad)
  with pytest.raises(ValueError, match="exactly one"):
    ox.schedule_free_eval_params(jnp.ones(2), ox.adam().init(jnp.ones(2)))
