"""What is particular to Ftrl, against Keras 3's ``Ftrl``.

Proved here (Keras ``stateless_apply`` under ``jax.jit`` is the oracle,
``atol = 1e-6`` on parameters of order 1; measured: at most ~1.2e-7):

* ``scale_by_ftrl`` alone in an ``optax.chain`` gives Keras's parameters
  (it reads the weights, so ``update`` needs ``params`` and says so);
* ``beta`` enters as ``l2 + beta / (2 * lr)`` with the *current* learning
  rate (a schedule), and ``learning_rate_power`` / ``initial_accumulator_value``
  act as Keras's;
* ``l2_shrinkage_regularization_strength`` acts on the linear term only: the
  accumulator still sums the raw squared gradients;
* a large L1 strength zeroes weights exactly, as Keras's clip does;
* rows of an embedding never touched by a gradient stay finite wherever
  Keras's do, and are NaN exactly where Keras's are (no accumulator, no L2,
  no beta: ``0 / 0``);
* there is no ``optax.ftrl`` to compare with.
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
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import ours_trajectory  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

STEPS = 28
ATOL = 1e-6
OWN = dict(learning_rate_power=-0.6, initial_accumulator_value=0.2,
           l1_regularization_strength=0.002, l2_regularization_strength=0.05,
           l2_shrinkage_regularization_strength=0.1, beta=0.3)


def test_rule_alone_in_an_optax_chain_matches_keras():
  params = make_params(31)
  grads = varied_grads(params, STEPS, seed=31)
  expected, _ = keras_trajectory("ftrl", params, grads, learning_rate=0.05,
                                 **OWN)
  tx = optax.chain(ox.scale_by_ftrl(0.05, **OWN), optax.scale(-1.0))
  actual, state = ours_trajectory(tx, params, grads)
  assert max_deviation(expected, actual) < ATOL
  assert int(state[0].count) == STEPS
  with pytest.raises(ValueError, match="`params` must be passed.*Ftrl"):
    tx.update(grads[0], tx.init(params))


def test_beta_uses_the_current_learning_rate_of_a_schedule():
  """beta / (2 lr) with lr from the schedule at each step, as Keras."""
  params = make_params(32)
  grads = varied_grads(params, STEPS, seed=32)
  keras_lr = keras.optimizers.schedules.ExponentialDecay(0.2, 4, 0.5)
  ours_lr = ox.schedules.exponential_decay(0.2, 4, 0.5)
  kw = dict(beta=2.0, l2_regularization_strength=0.01)
  expected, _ = keras_trajectory("ftrl", params, grads,
                                 learning_rate=keras_lr, **kw)
  actual, _ = ours_trajectory(ox.ftrl(ours_lr, **kw), params, grads)
  assert max_deviation(expected, actual) < ATOL
  # beta / (2 lr) frozen at the first learning rate is another trajectory.
  frozen = ox.ftrl(ours_lr, beta=0.0,
                   l2_regularization_strength=0.01 + 2.0 / (2 * 0.2))
  assert max_deviation(expected, ours_trajectory(frozen, params, grads)[0]) > (
      1e-3)


def test_shrinkage_acts_on_the_linear_term_only():
  params = {"w": jnp.asarray(np.linspace(-2, 2, 7), jnp.float32)}
  grads = varied_grads(params, STEPS, seed=33)
  kw = dict(learning_rate=0.1, l2_shrinkage_regularization_strength=0.5)
  expected, _ = keras_trajectory("ftrl", params, grads, **kw)
  tx = ox.ftrl(**kw)
  actual, state = ours_trajectory(tx, params, grads)
  assert max_deviation(expected, actual) < ATOL
  rule_state = state.inner[1]
  raw = 0.1 + sum(np.square(np.asarray(g["w"], np.float64)) for g in grads)
  np.testing.assert_allclose(rule_state.accumulator["w"], raw, rtol=1e-6)
  plain, _ = ours_trajectory(ox.ftrl(learning_rate=0.1), params, grads)
  assert max_deviation(plain, actual) > 1e-3  # the shrinkage did act


def test_large_l1_zeroes_weights_exactly_like_keras():
  params = make_params(34)
  grads = varied_grads(params, STEPS, seed=34)
  kw = dict(learning_rate=0.1, l1_regularization_strength=2.0)
  expected, _ = keras_trajectory("ftrl", params, grads, **kw)
  actual, _ = ours_trajectory(ox.ftrl(**kw), params, grads)
  assert max_deviation(expected, actual) < ATOL
  zeros = 0
  for e_t, a_t in zip(expected, actual):
    for e, a in zip(jax.tree.leaves(e_t), jax.tree.leaves(a_t)):
      np.testing.assert_array_equal(a == 0, e == 0)
      zeros += int((a == 0).sum())
  assert zeros > 50


@pytest.mark.parametrize("kw,keras_finite", [
    (dict(), True),
    (dict(initial_accumulator_value=0.0, l2_regularization_strength=0.1),
     True),
    (dict(initial_accumulator_value=0.0, beta=0.5), True),
    (dict(initial_accumulator_value=0.0, learning_rate_power=0.0), True),
    (dict(initial_accumulator_value=0.0, weight_decay=0.1,
          l1_regularization_strength=0.01, l2_regularization_strength=0.01,
          gradient_accumulation_steps=2, use_ema=True), True),
    (dict(initial_accumulator_value=0.0), False),
], ids=["defaults", "no-accumulator-l2", "no-accumulator-beta",
        "fixed-rate", "options", "keras-nan"])
def test_untouched_embedding_rows_stay_finite_where_keras_does(
    kw, keras_finite):
  """Rows 4 and 5 of the embedding never get a gradient."""
  rng = np.random.default_rng(35)
  params = {"embed": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}
  grads = varied_grads(params, STEPS, seed=35)
  for g in grads:
    g["embed"] = g["embed"].at[4:].set(0.0)
  kw = dict(kw, learning_rate=0.1)
  expected, _ = keras_trajectory("ftrl", params, grads, **kw)
  actual, _ = ours_trajectory(ox.ftrl(**kw), params, grads)
  assert max_deviation(expected, actual) < ATOL
  for e, a in zip(expected, actual):
    untouched_k, untouched = e["embed"][4:], a["embed"][4:]
    assert np.isfinite(untouched_k).all() == keras_finite
    np.testing.assert_array_equal(np.isfinite(untouched),
                                  np.isfinite(untouched_k))
    assert np.isfinite(a["embed"][:4]).all() and np.isfinite(a["bias"]).all()
  if keras_finite:  # z stays 0 there, so the weight is exactly 0.
    assert not np.asarray(actual[-1]["embed"][4:]).any()


def test_no_optax_peer():
  """optax has no FTRL: the benchmarks compare with Keras alone."""
  assert not hasattr(optax, "ftrl")
  assert not hasattr(optax.contrib, "ftrl")


def test_rule_told_of_the_decay_matches_keras_ftrl_with_weight_decay():
  """``scale_by_ftrl(weight_decay=...)`` chained with the decay is Keras's
  Ftrl with weight decay over 28 steps, with a leaf excluded by name and
  with a traced mask; the rule not told of the decay reads the undecayed
  weights and is off."""
  params = make_params(32)
  grads = varied_grads(params, STEPS, seed=32)
  lr, wd = 0.05, 0.3
  for exclude in (None, ["bias"]):
    expected, _ = keras_trajectory(
        "ftrl", params, grads, learning_rate=lr, weight_decay=wd,
        exclude=exclude, **OWN)
    told = optax.chain(
        ox.scale_by_ftrl(lr, **OWN, weight_decay=wd,
                         exclude_from_weight_decay=exclude),
        ox.add_decoupled_weight_decay(wd, lr,
                                      exclude_from_weight_decay=exclude),
        optax.scale(-1.0))
    ours, _ = ours_trajectory(told, params, grads)
    assert max_deviation(expected, ours) < ATOL
  # The same exclusion as a mask of traced booleans (jnp.where's path).
  mask = jax.tree_util.tree_map_with_path(
      lambda path, _: jnp.asarray(path[-1].key != "bias"), params)
  masked = optax.chain(
      ox.scale_by_ftrl(lr, **OWN, weight_decay=wd, weight_decay_mask=mask),
      ox.add_decoupled_weight_decay(wd, lr, weight_decay_mask=mask),
      optax.scale(-1.0))
  ours, _ = ours_trajectory(masked, params, grads)
  assert max_deviation(expected, ours) < ATOL
  untold = optax.chain(ox.scale_by_ftrl(lr, **OWN),
                       ox.add_decoupled_weight_decay(wd, lr),
                       optax.scale(-1.0))
  wrong, _ = ours_trajectory(untold, params, grads)
  assert max_deviation(expected, wrong) > 1e-4


@pytest.mark.parametrize("value", [-0.1, float("nan")])
def test_scale_by_ftrl_refuses_a_bad_weight_decay(value):
  with pytest.raises(ValueError, match=(
      r"`weight_decay` must be a finite number >= 0. "
      r"Received: weight_decay=")):
    ox.scale_by_ftrl(0.05, weight_decay=value)
