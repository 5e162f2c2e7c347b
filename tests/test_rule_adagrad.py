"""What is particular to Adagrad: its starting accumulator and its epsilon.

Keras starts the sum of squared gradients at ``initial_accumulator_value``
(not at zero) and adds epsilon under the square root. The factory is covered
option by option by test_aliases.py; here the rule is used alone in an optax
chain and its edge cases are compared with Keras.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import optax_suite as ox  # noqa: E402
from keras_oracle import keras_trajectory  # noqa: E402
from keras_oracle import make_params  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import ours_trajectory  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

STEPS = 28


@pytest.mark.parametrize("initial,epsilon", [(0.5, 1e-3), (0.0, 1e-7)])
def test_rule_alone_in_an_optax_chain_matches_keras(initial, epsilon):
  """scale_by_adagrad(lr) + optax.scale(-1) is Keras's Adagrad; the first
  case's large starting value and epsilon make their placement show: a rule
  with epsilon outside the root or a zero start is far off."""
  params = make_params(11)
  grads = varied_grads(params, STEPS, seed=11)
  kw = dict(initial_accumulator_value=initial, epsilon=epsilon)
  expected, _ = keras_trajectory("adagrad", params, grads, learning_rate=0.1,
                                 **kw)
  ours, state = ours_trajectory(
      optax.chain(ox.scale_by_adagrad(0.1, **kw), optax.scale(-1.0)), params,
      grads)
  assert max_deviation(expected, ours) <= 1e-6
  assert int(state[0].count) == STEPS
  if initial:
    zero_start, _ = ours_trajectory(
        optax.chain(ox.scale_by_adagrad(0.1, 0.0, epsilon), optax.scale(-1.0)),
        params, grads)
    assert max_deviation(expected, zero_start) > 1e-3


def test_accumulator_starts_at_its_value_and_first_step_is_the_formula():
  """The slot starts at initial_accumulator_value (ints get none), and one
  step is lr * g / sqrt(a0 + g^2 + eps), computed in float32."""
  params = {"w": jnp.array([1.0, -2.0, 3.0]), "n": jnp.array(3, jnp.int32)}
  tx = ox.scale_by_adagrad(0.2, initial_accumulator_value=0.25, epsilon=1e-3)
  state = tx.init(params)
  np.testing.assert_array_equal(state.accumulator["w"], np.full(3, 0.25))
  assert state.accumulator["n"] is None
  g = np.array([0.5, 0.0, -4.0], np.float32)
  u, state = tx.update({"w": jnp.asarray(g), "n": jnp.array(1, jnp.int32)},
                       state)
  a = np.float32(0.25) + g * g
  np.testing.assert_array_equal(state.accumulator["w"], a)
  np.testing.assert_array_equal(
      u["w"], (np.float32(0.2) * g) / np.sqrt(a + np.float32(1e-3)))
  assert u["n"].dtype == jnp.int32 and int(u["n"]) == 0


def test_zero_start_with_zero_gradients_matches_keras():
  """With no starting value, a leaf whose gradient is zero at first does
  not move (0 / sqrt(eps)), in Keras and here."""
  params = {"w": jnp.array([1.0, -1.0]), "b": jnp.array([0.5])}
  grads = [{"w": jnp.array([0.0, 2.0]), "b": jnp.array([0.0])},
           {"w": jnp.array([0.0, 0.0]), "b": jnp.array([1.0])},
           {"w": jnp.array([3.0, -1.0]), "b": jnp.array([0.0])}]
  kw = dict(learning_rate=0.1, initial_accumulator_value=0.0)
  expected, _ = keras_trajectory("adagrad", params, grads, **kw)
  ours, _ = ours_trajectory(ox.adagrad(**kw), params, grads)
  assert max_deviation(expected, ours) == 0
  assert float(ours[1]["w"][0]) == 1.0 and float(ours[0]["b"][0]) == 0.5


def test_injected_initial_accumulator_value():
  """inject_hyperparams: the starting value is read at init, numbers equal."""
  params = make_params(12)
  grads = varied_grads(params, 6, seed=12)
  kw = dict(learning_rate=0.05, initial_accumulator_value=0.7)
  direct, _ = ours_trajectory(ox.adagrad(**kw), params, grads)
  injected, state = ours_trajectory(
      optax.inject_hyperparams(ox.adagrad)(**kw), params, grads)
  assert max_deviation(direct, injected) == 0
  assert float(state.hyperparams["initial_accumulator_value"]) == (
      np.float32(0.7))
  leaves = jax.tree.leaves(state.inner_state.inner[1].accumulator)
  assert all(bool((x >= np.float32(0.7)).all()) for x in leaves)
