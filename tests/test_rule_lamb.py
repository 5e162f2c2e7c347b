"""What is particular to Lamb: its trust ratio and where the decay goes.

Keras's Lamb takes one trust ratio per variable, ||w|| / ||r|| over the whole
leaf (1 where either norm is 0), and its weight decay is the base decoupled
decay, applied to the variable before the step and outside the ratio, which
then reads the decayed variable. optax's ``lamb`` puts the decay inside the
ratio. Checked against Keras here: the rule alone in an optax chain, zero
leaves and zero updates, the decay's placement, and ``params`` being needed.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

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


def test_rule_alone_in_an_optax_chain_matches_keras():
  """scale_by_lamb(lr) + optax.scale(-1), params passed, is Keras's Lamb."""
  params = make_params(17)
  grads = varied_grads(params, STEPS, seed=17)
  kw = dict(beta_1=0.8, beta_2=0.99, epsilon=1e-6)
  expected, _ = keras_trajectory("lamb", params, grads, learning_rate=0.02,
                                 **kw)
  ours, state = ours_trajectory(
      optax.chain(ox.scale_by_lamb(0.02, **kw), optax.scale(-1.0)), params,
      grads)
  assert max_deviation(expected, ours) <= 1e-6
  assert int(state[0].count) == STEPS


def test_decay_outside_the_trust_ratio_as_keras_not_optax():
  """With weight decay, the rule told of the decay and chained with it is
  Keras's Lamb; optax's lamb (decay inside the ratio) is far off, and so is
  the rule that is not told (its ratio reads the undecayed weights)."""
  params = make_params(18)
  grads = varied_grads(params, STEPS, seed=18)
  lr, wd = 0.02, 0.2
  expected, _ = keras_trajectory("lamb", params, grads, learning_rate=lr,
                                 weight_decay=wd)
  told = optax.chain(ox.scale_by_lamb(lr, weight_decay=wd),
                     ox.add_decoupled_weight_decay(wd, lr), optax.scale(-1.0))
  ours, _ = ours_trajectory(told, params, grads)
  assert max_deviation(expected, ours) <= 1e-6
  factory, _ = ours_trajectory(ox.lamb(lr, weight_decay=wd), params, grads)
  assert max_deviation(expected, factory) <= 1e-6
  theirs, _ = ours_trajectory(optax.lamb(lr, eps=1e-7, weight_decay=wd),
                              params, grads)
  assert max_deviation(expected, theirs) > 1e-3
  untold = optax.chain(ox.scale_by_lamb(lr),
                       ox.add_decoupled_weight_decay(wd, lr),
                       optax.scale(-1.0))
  wrong, _ = ours_trajectory(untold, params, grads)
  assert max_deviation(expected, wrong) > 1e-6


def test_zero_weights_and_zero_updates_take_ratio_one():
  """A leaf of zeros steps by lr * r (ratio 1), a leaf whose gradient is
  always zero stays put, and a scalar leaf's norm is its magnitude."""
  params = {"zeros": jnp.zeros((3, 2)), "idle": jnp.array([1.0, -2.0]),
            "kernel": jnp.array([[0.5, -1.5], [2.0, 0.1]]),
            "scale": jnp.array(3.0)}
  grads = varied_grads(params, 10, seed=19)
  for g in grads:
    g["idle"] = jnp.zeros(2)
  expected, _ = keras_trajectory("lamb", params, grads, learning_rate=0.05)
  ours, _ = ours_trajectory(ox.lamb(0.05), params, grads)
  assert max_deviation(expected, ours) <= 1e-6
  np.testing.assert_array_equal(ours[-1]["idle"], params["idle"])
  # First step from zeros: ratio 1, |r| = 1 elementwise (m_hat/sqrt(v_hat)).
  first = np.asarray(ours[0]["zeros"])
  np.testing.assert_allclose(np.abs(first[np.asarray(grads[0]["zeros"]) != 0]),
                             0.05, rtol=1e-5)


def test_rule_needs_params():
  """The trust ratio reads the weights: no params, a ValueError saying so."""
  tx = ox.scale_by_lamb(0.1)
  params = {"w": jnp.ones(2)}
  with pytest.raises(ValueError, match="`params` must be passed.*trust ratio"):
    tx.update({"w": jnp.ones(2)}, tx.init(params))
  opt = ox.lamb()
  with pytest.raises(ValueError, match="`params` must be passed.*trust ratio"):
    opt.update({"w": jnp.ones(2)}, opt.init(params))
