"""What is particular to Keras's SGD (``ox.sgd``, ``ox.scale_by_sgd``).

What is proved here:

* the velocity holds the learning rate, as Keras's: under a decaying
  schedule the rule alone (``scale_by_sgd`` chained with ``optax.scale(-1)``)
  follows Keras step for step, while ``optax.sgd``'s trace does not;
* ``momentum=0`` keeps no slot (Keras builds none; the state holds a tree of
  Nones with the params' structure), any other momentum one
  velocity per trainable leaf, holding Keras's ``momentum`` variables;
* under ``optax.inject_hyperparams`` the state has one structure whether
  ``init`` runs eagerly or under ``jax.jit``, and an injected momentum acts
  even when the run started at 0 (issue 9 item 12, for SGD);
* ``momentum=1`` (Keras's upper bound) is accepted, above 1 refused.

Keras comparisons use ``atol = rtol = 1e-6``.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import optax_suite as ox  # noqa: E402
from keras_oracle import build_keras  # noqa: E402
from keras_oracle import keras_trajectory  # noqa: E402
from keras_oracle import make_params  # noqa: E402
from keras_oracle import ULPS_INJECTED  # noqa: E402
from keras_oracle import assert_trajectories_match  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import ours_trajectory  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

STEPS = 28


@pytest.mark.parametrize("nesterov", [False, True])
def test_rule_alone_under_a_schedule_matches_keras_not_optax(nesterov):
  params = make_params(11)
  grads = varied_grads(params, STEPS, seed=11)
  sched = optax.exponential_decay(0.05, transition_steps=4, decay_rate=0.5)
  expected, _ = keras_trajectory(
      "sgd", params, grads, momentum=0.9, nesterov=nesterov,
      learning_rate=keras.optimizers.schedules.ExponentialDecay(0.05, 4, 0.5))
  ours, _ = ours_trajectory(
      optax.chain(ox.scale_by_sgd(sched, 0.9, nesterov), optax.scale(-1.0)),
      params, grads)
  assert max_deviation(expected, ours) < 1e-6
  theirs, _ = ours_trajectory(optax.sgd(sched, 0.9, nesterov), params, grads)
  assert max_deviation(expected, theirs) > 1e-3


def test_slots_follow_keras_build():
  params = dict(make_params(0), step=jnp.zeros([], jnp.int32))
  no_velocity = ox.scale_by_sgd(0.1).init(params).momentum
  assert jax.tree.leaves(no_velocity) == []  # Nones in the params' structure
  assert jax.tree.structure(no_velocity) == jax.tree.structure(
      jax.tree.map(lambda _: None, params))
  keras_opt, _ = build_keras("sgd", {k: v for k, v in params.items()
                                     if k != "step"})
  assert not [v for v in keras_opt.variables if "momentum" in v.name]
  velocity = ox.scale_by_sgd(0.1, momentum=0.5).init(params).momentum
  assert velocity["step"] is None
  assert jax.tree.structure(velocity["dense"]) == jax.tree.structure(
      params["dense"])
  keras_opt, _ = build_keras("sgd", {k: v for k, v in params.items()
                                     if k != "step"}, momentum=0.5)
  assert len([v for v in keras_opt.variables if "momentum" in v.name]) == sum(
      jnp.issubdtype(x.dtype, jnp.floating) for x in jax.tree.leaves(params))


def test_injected_momentum_one_structure_and_it_acts():
  params = make_params(12)
  grads = varied_grads(params, 10, seed=12)
  opt = optax.inject_hyperparams(ox.sgd)(learning_rate=0.05, momentum=0.0)
  eager = opt.init(params)
  jitted = jax.jit(opt.init)(params)
  assert jax.tree.structure(eager) == jax.tree.structure(jitted)
  # Momentum 0 injected gives plain SGD's numbers...
  plain, _ = ours_trajectory(ox.sgd(0.05), params, grads)
  injected, _ = ours_trajectory(opt, params, grads)
  # Injected hyperparameters are float32 arrays: keras_oracle's bound.
  assert_trajectories_match(plain, injected, ulps=ULPS_INJECTED)
  # ...and 0.9 set in the state acts as a factory built with 0.9.
  eager.hyperparams["momentum"] = jnp.asarray(0.9)
  step = jax.jit(opt.update)
  p, state = params, eager
  for g in grads:
    u, state = step(g, state, p)
    p = optax.apply_updates(p, u)
  with_momentum, _ = ours_trajectory(ox.sgd(0.05, momentum=0.9), params, grads)
  assert max_deviation([with_momentum[-1]], [p]) < 1e-6
  assert max_deviation([plain[-1]], [p]) > 1e-3


def test_momentum_bounds():
  ox.sgd(momentum=1.0)
  with pytest.raises(ValueError, match=r"momentum=1\.5"):
    ox.sgd(momentum=1.5)
  with pytest.raises(ValueError, match=r"momentum=-0\.1"):
    ox.scale_by_sgd(momentum=-0.1)
