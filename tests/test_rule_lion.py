"""What is particular to Keras's Lion (``ox.lion``, ``ox.scale_by_lion``).

What is proved here:

* the rule alone (``scale_by_lion`` chained with ``optax.scale(-1)``) under a
  schedule follows Keras step for step: ``beta_1`` interpolates for the sign
  step, ``beta_2`` decays the momentum, the step comes before the momentum
  update; optax's ``scale_by_lion`` has the same roles and agrees;
* Keras's Lion has no weight decay by default, ``optax.lion`` has 1e-3 (its
  trajectory differs); a weight decay given acts as Keras's base decay;
* a zero interpolation (zero gradient on a zero momentum) gives no step;
* ``beta_1`` is in (0, 1] as Keras checks it: 0 refused, 1 accepted.

Keras comparisons use ``atol = rtol = 1e-6``.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import optax_suite as ox  # noqa: E402
from keras_oracle import keras_trajectory  # noqa: E402
from keras_oracle import make_params  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import ours_trajectory  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

STEPS = 28


def test_rule_alone_under_a_schedule_matches_keras():
  params = make_params(41)
  grads = varied_grads(params, STEPS, seed=41)
  expected, _ = keras_trajectory(
      "lion", params, grads, beta_1=0.5, beta_2=0.8,
      learning_rate=keras.optimizers.schedules.ExponentialDecay(0.05, 4, 0.5))
  sched = optax.exponential_decay(0.05, transition_steps=4, decay_rate=0.5)
  ours, _ = ours_trajectory(
      optax.chain(ox.scale_by_lion(sched, 0.5, 0.8), optax.scale(-1.0)),
      params, grads)
  assert max_deviation(expected, ours) < 1e-6
  theirs, _ = ours_trajectory(
      optax.chain(optax.scale_by_lion(b1=0.5, b2=0.8),
                  optax.scale_by_learning_rate(sched)), params, grads)
  assert max_deviation(expected, theirs) < 1e-6


def test_no_default_weight_decay_unlike_optax():
  params = make_params(42)
  grads = varied_grads(params, STEPS, seed=42)
  expected, _ = keras_trajectory("lion", params, grads, learning_rate=0.05)
  ours, _ = ours_trajectory(ox.lion(0.05), params, grads)
  assert ox.lion().config["weight_decay"] is None
  assert max_deviation(expected, ours) < 1e-6
  theirs, _ = ours_trajectory(optax.lion(0.05), params, grads)
  assert max_deviation(expected, theirs) > 1e-4
  decayed, _ = keras_trajectory("lion", params, grads, learning_rate=0.05,
                                weight_decay=0.5)
  ours_decayed, _ = ours_trajectory(ox.lion(0.05, weight_decay=0.5), params,
                                    grads)
  assert max_deviation(decayed, ours_decayed) < 1e-6


def test_zero_interpolation_gives_no_step():
  tx = ox.scale_by_lion(0.1)
  step, state = tx.update(jnp.array([0.0, 2.0]), tx.init(jnp.zeros(2)))
  assert step.tolist() == [0.0, jnp.float32(0.1)]
  step, _ = tx.update(jnp.array([0.0, 0.0]), state)
  # The momentum still points the way.
  assert step.tolist() == [0.0, jnp.float32(0.1)]


def test_beta_1_range_is_keras():
  ox.lion(beta_1=1.0)
  for bad in (0.0, -0.5, 1.5, float("nan")):
    with pytest.raises(ValueError, match=f"beta_1={bad!r}"):
      ox.lion(beta_1=bad)
