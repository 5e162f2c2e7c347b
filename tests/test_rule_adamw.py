"""What is particular to Keras's AdamW (``ox.adamw``).

What is proved here:

* AdamW is Keras's Adam rule (the same ``scale_by_adam`` state) plus the base
  decoupled decay: ``ox.adamw(wd)`` gives exactly ``ox.adam(weight_decay=wd)``
  and Keras's ``AdamW``, while ``optax.adamw`` (the same decay, optax's
  epsilon) is not;
* ``weight_decay`` is second in the signature and 0.004 by default, so
  ``adamw(0.01, 0.1)`` decays at 0.1; ``weight_decay=None`` is refused, as
  Keras refuses it;
* Keras's weight-decay exclusions apply.

Keras comparisons use ``atol = rtol = 1e-6``.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import pytest  # noqa: E402
import optax  # noqa: E402

import optax_suite as ox  # noqa: E402
from keras_oracle import keras_trajectory  # noqa: E402
from keras_oracle import make_params  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import ours_trajectory  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

STEPS = 28


def test_adam_rule_plus_base_decay_matches_keras_not_optax():
  params = make_params(31)
  grads = varied_grads(params, STEPS, seed=31)
  expected, _ = keras_trajectory("adamw", params, grads, learning_rate=0.02,
                                 weight_decay=0.2, amsgrad=True)
  ours, state = ours_trajectory(ox.adamw(0.02, 0.2, amsgrad=True), params,
                                grads)
  as_adam, _ = ours_trajectory(
      ox.adam(0.02, amsgrad=True, weight_decay=0.2), params, grads)
  assert isinstance(state.inner[1], ox.ScaleByAdamState)
  assert max_deviation(ours, as_adam) == 0
  assert max_deviation(expected, ours) < 1e-6
  # optax.adamw also decays by lr * wd * w; its epsilon sits elsewhere, which
  # shows with a larger epsilon.
  plain, _ = keras_trajectory("adamw", params, grads, learning_rate=0.02,
                              weight_decay=0.2, epsilon=1e-3)
  assert max_deviation(plain, ours_trajectory(
      ox.adamw(0.02, 0.2, epsilon=1e-3), params, grads)[0]) < 1e-6
  theirs, _ = ours_trajectory(
      optax.adamw(0.02, weight_decay=0.2, eps=1e-3), params, grads)
  assert max_deviation(plain, theirs) > 1e-3


def test_default_weight_decay_is_on_and_second():
  opt = ox.adamw()
  assert opt.config["weight_decay"] == 0.004
  assert ox.adamw(0.01, 0.1).config["weight_decay"] == 0.1
  params = make_params(32)
  grads = varied_grads(params, STEPS, seed=32)
  expected, _ = keras_trajectory("adamw", params, grads, learning_rate=0.05)
  ours, _ = ours_trajectory(ox.adamw(0.05), params, grads)
  no_decay, _ = ours_trajectory(ox.adamw(0.05, 0.0), params, grads)
  assert max_deviation(expected, ours) < 1e-6
  assert max_deviation(expected, no_decay) > 1e-5


def test_weight_decay_none_refused_as_keras():
  with pytest.raises(ValueError, match="weight_decay=None"):
    ox.adamw(weight_decay=None)


def test_exclusions_apply():
  params = make_params(33)
  grads = varied_grads(params, STEPS, seed=33)
  expected, _ = keras_trajectory("adamw", params, grads, exclude=["bias"],
                                 learning_rate=0.05, weight_decay=0.3)
  ours, _ = ours_trajectory(
      ox.adamw(0.05, 0.3, exclude_from_weight_decay=["bias"]), params, grads)
  assert max_deviation(expected, ours) < 1e-6
