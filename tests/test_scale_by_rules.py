"""Every update rule on its own (``scale_by_*``), chained with optax.

They are the pieces the factories are built from, so each rule of
``tests/catalog.py`` (``RULES``: one per ``scale_by_*``, AdamW sharing
Adam's) is checked against the Keras class of its name directly, at its
entry's ``rule_own`` arguments, and against the optax rule of the same name
(the entry's ``optax_rule``) to show where optax's epsilon (or
learning-rate placement) differs.
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
from catalog import CATALOG  # noqa: E402
from catalog import RULES  # noqa: E402
from catalog import rule_kind  # noqa: E402
from keras_oracle import FAR  # noqa: E402
from keras_oracle import assert_trajectories_match  # noqa: E402
from keras_oracle import build_keras  # noqa: E402
from keras_oracle import keras_trajectory  # noqa: E402
from keras_oracle import make_params  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import ours_trajectory  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

LR = 0.01  # or the entry's parity learning rate (Adadelta's is 1.0).
LINEAR = tuple(r for r in RULES
               if CATALOG[rule_kind(r)].step_linear_in_learning_rate)
CONTRASTED = tuple(r for r in RULES
                   if CATALOG[rule_kind(r)].optax_rule is not None)


def _run(rule):
  kind = rule_kind(rule)
  entry = CATALOG[kind]
  params = make_params(7)
  grads = varied_grads(params, 30, seed=7)
  return kind, entry, entry.parity_learning_rate or LR, params, grads


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("rule", RULES)
def test_rule_given_a_decaying_learning_rate_matches_keras(rule):
  """scale_by_X(schedule) + scale(-1) gives Keras's numbers under the same
  schedule: a changing rate shows where each rule keeps it (inside
  RMSprop's and SGD's momentum, in Ftrl's and Schedule-Free's formulas)."""
  kind, entry, lr, params, grads = _run(rule)
  expected, _ = keras_trajectory(
      kind, params, grads,
      learning_rate=keras.optimizers.schedules.ExponentialDecay(lr, 5, 0.5),
      **entry.rule_own, **entry.rule_keras_own)
  schedule = ox.schedules.exponential_decay(lr, 5, 0.5)
  actual, _ = ours_trajectory(
      optax.chain(getattr(ox, rule)(schedule, **entry.rule_own),
                  optax.scale(-1.0)), params, grads)
  assert_trajectories_match(expected, actual, 30)
  if entry.optax_rule is None:
    return
  plain_optax, _ = ours_trajectory(
      optax.chain(entry.optax_rule(), optax.scale_by_learning_rate(schedule)),
      params, grads)
  # Not a tolerance question: optax's rule is a different rule.
  assert max_deviation(expected, plain_optax) > FAR


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("rule", LINEAR)
def test_rule_chained_with_learning_rate_matches_keras(rule):
  """scale_by_X() + scale_by_learning_rate(lr) gives Keras's numbers at a
  constant rate, for the rules whose step is linear in it."""
  kind, entry, lr, params, grads = _run(rule)
  expected, _ = keras_trajectory(kind, params, grads, learning_rate=lr,
                                 **entry.rule_own, **entry.rule_keras_own)
  actual, _ = ours_trajectory(
      optax.chain(getattr(ox, rule)(**entry.rule_own),
                  optax.scale_by_learning_rate(lr)), params, grads)
  assert_trajectories_match(expected, actual, 30)


def test_the_rules_whose_step_is_not_linear_in_the_rate_are_not():
  """The catalog's `step_linear_in_learning_rate=False` is no excuse: for
  each such rule the chained form is far from Keras."""
  nonlinear = sorted(set(RULES) - set(LINEAR))
  assert nonlinear
  for rule in nonlinear:
    kind, entry, lr, params, grads = _run(rule)
    expected, _ = keras_trajectory(kind, params, grads, learning_rate=lr,
                                   **entry.rule_own, **entry.rule_keras_own)
    actual, _ = ours_trajectory(
        optax.chain(getattr(ox, rule)(**entry.rule_own),
                    optax.scale_by_learning_rate(lr)), params, grads)
    assert max_deviation(expected, actual) > FAR, rule


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("rule", RULES)
def test_slot_dtype_and_state_shapes(rule):
  """With slot_dtype=float32, bfloat16 parameters get the state float32
  parameters get (every slot's shape and dtype); the updates stay in the
  parameters' dtype, and an integer leaf gets a zero update."""
  own = CATALOG[rule_kind(rule)].rule_own
  tx = getattr(ox, rule)(slot_dtype=jnp.float32, **own)
  n = jnp.asarray(3)
  state = tx.init({"w": jnp.ones((2, 3), jnp.bfloat16), "n": n})
  reference = getattr(ox, rule)(**own).init(
      {"w": jnp.ones((2, 3), jnp.float32), "n": n})
  types = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)
  assert types(state) == types(reference)
  slots = [leaf for leaf in jax.tree.leaves(state) if leaf.ndim]
  assert slots, "no slot of the (2, 3) leaf: the check above saw none"
  assert {leaf.dtype for leaf in slots} == {jnp.dtype(jnp.float32)}
  updates, _ = tx.update({"w": jnp.ones((2, 3), jnp.bfloat16),
                          "n": jnp.asarray(0)}, state,
                         {"w": jnp.ones((2, 3), jnp.bfloat16), "n": n})
  assert updates["w"].dtype == jnp.bfloat16
  assert int(updates["n"]) == 0


def test_adam_amsgrad_keeps_the_max():
  """After a gradient g and two zero ones, Keras's second moment is
  (1 - b2) g**2 decayed twice by b2, and amsgrad's maximum is still
  (1 - b2) g**2, the first step's."""
  beta_2 = 0.999
  g = np.asarray([10.0, 1.0], np.float32)
  tx = ox.scale_by_adam(beta_2=beta_2, amsgrad=True)
  state = tx.init(jnp.zeros(2))
  for grad in (g, np.zeros(2, np.float32), np.zeros(2, np.float32)):
    _, state = tx.update(jnp.asarray(grad), state)
  first = (1 - beta_2) * g.astype(np.float64) ** 2
  np.testing.assert_allclose(state.nu, beta_2**2 * first, rtol=1e-6)
  np.testing.assert_allclose(state.nu_hat, first, rtol=1e-6)


def test_rmsprop_momentum_slot_as_keras_builds_it():
  """Keras's RMSprop builds a momentum slot (of zeros) only for a momentum
  other than 0; so does the rule."""
  params = np.asarray([1.0, -2.0], np.float32)
  for momentum in (0.0, 0.1):
    k_opt, _ = build_keras("rmsprop", {"w": params}, momentum=momentum)
    keras_slots = [v for v in k_opt.variables
                   if v.name.endswith("_momentum")]
    ours = ox.scale_by_rmsprop(momentum=momentum).init(
        jnp.asarray(params)).momentum
    if not keras_slots:
      assert momentum == 0.0 and ours is None
      continue
    (slot,) = keras_slots
    assert ours.dtype == jnp.float32
    np.testing.assert_array_equal(ours, np.asarray(slot.value))
