"""The four update rules on their own (``scale_by_*``), chained with optax.

They are the pieces the factories are built from, so each is checked against
Keras directly, and against the optax rule of the same name to show where
optax's epsilon (or learning-rate placement) differs.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import optax_suite as ox  # noqa: E402
from keras_oracle import assert_trajectories_match  # noqa: E402
from keras_oracle import keras_trajectory  # noqa: E402
from keras_oracle import make_params  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import ours_trajectory  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

LR = 0.01
EPS = 1e-3  # large enough for epsilon's placement to show
RULES = {
    "adam": (lambda: ox.scale_by_adam(epsilon=EPS),
             lambda: optax.scale_by_adam(eps=EPS)),
    "adamax": (lambda: ox.scale_by_adamax(beta_2=0.5, epsilon=EPS),
               lambda: optax.scale_by_adamax(b2=0.5, eps=EPS)),
    # optax's Adadelta is Keras's rule: nothing to contrast.
    "adadelta": (lambda: ox.scale_by_adadelta(epsilon=EPS), None),
    "rmsprop": (None, lambda: optax.chain(
        optax.scale_by_rms(decay=0.9, eps=EPS, eps_in_sqrt=True),
        optax.trace(0.9))),
}


@pytest.mark.parametrize("kind", sorted(RULES))
def test_rule_chained_with_learning_rate_matches_keras(kind):
  """scale_by_X() + scale_by_learning_rate(lr) gives Keras's numbers."""
  params = make_params(7)
  grads = varied_grads(params, 30, seed=7)
  ours_rule, optax_rule = RULES[kind]
  lr = LR
  if kind == "rmsprop":
    # Keras keeps the learning rate inside the momentum, which shows once
    # the rate changes: use a decaying one, and hand it to the rule.
    lr = optax.exponential_decay(LR, transition_steps=5, decay_rate=0.5)
    keras_lr = keras.optimizers.schedules.ExponentialDecay(LR, 5, 0.5)
    expected, _ = keras_trajectory(kind, params, grads, learning_rate=keras_lr,
                                   momentum=0.9, epsilon=EPS)
    ours = optax.chain(ox.scale_by_rmsprop(lr, momentum=0.9, epsilon=EPS),
                       optax.scale(-1.0))
  else:
    extra = {"beta_2": 0.5} if kind == "adamax" else {}
    expected, _ = keras_trajectory(kind, params, grads, learning_rate=LR,
                                   epsilon=EPS, **extra)
    ours = optax.chain(ours_rule(), optax.scale_by_learning_rate(LR))
  actual, _ = ours_trajectory(ours, params, grads)
  assert_trajectories_match(expected, actual)
  if optax_rule is None:
    return
  plain_optax, _ = ours_trajectory(
      optax.chain(optax_rule(), optax.scale_by_learning_rate(lr)), params,
      grads)
  # Not a tolerance question: optax's rule is a different rule.
  assert max_deviation(expected, plain_optax) > 1e-5


@pytest.mark.parametrize("make", [
    ox.scale_by_adam, ox.scale_by_adamax, ox.scale_by_adadelta,
    lambda **kw: ox.scale_by_rmsprop(momentum=0.5, centered=True, **kw)])
def test_slot_dtype_and_state_shapes(make):
  params = {"w": jnp.ones((2, 3), jnp.bfloat16), "n": jnp.asarray(3)}
  tx = make(slot_dtype=jnp.float32)
  state = tx.init(params)
  for leaf in jax.tree.leaves(state):
    if leaf.ndim:
      assert leaf.shape == (2, 3) and leaf.dtype == jnp.float32
  updates, _ = tx.update({"w": jnp.ones((2, 3), jnp.bfloat16),
                          "n": jnp.asarray(0)}, state)
  assert updates["w"].dtype == jnp.bfloat16
  assert int(updates["n"]) == 0


def test_adam_amsgrad_keeps_the_max():
  tx = ox.scale_by_adam(amsgrad=True)
  state = tx.init(jnp.zeros(2))
  for g in ([10.0, 1.0], [0.0, 0.0], [0.0, 0.0]):
    _, state = tx.update(jnp.asarray(g), state)
  assert bool(jnp.all(state.nu_hat >= state.nu))
  assert bool(jnp.any(state.nu_hat > state.nu))


def test_rmsprop_without_momentum_keeps_no_buffer():
  assert ox.scale_by_rmsprop().init(jnp.zeros(2)).momentum is None
  assert ox.scale_by_rmsprop(momentum=0.1).init(jnp.zeros(2)).momentum \
      is not None
