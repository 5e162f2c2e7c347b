"""What is particular to Adafactor, against Keras 3's ``Adafactor``.

Proved here (Keras ``stateless_apply`` under ``jax.jit`` is the oracle;
``atol = 1e-6`` on parameters of order 1, measured: 0 to ~1.2e-7):

* ``scale_by_adafactor`` alone in an ``optax.chain`` gives Keras's numbers on
  leaves of rank 0 to 4, including degenerate matrices (a dimension of 1),
  which Keras factors too (it factors the last two dimensions of every leaf
  of rank >= 2); ``update`` needs ``params`` and says so;
* ``rho_t = min(lr, 1 / sqrt(t))``: ``relative_step`` True or False, with a
  constant learning rate above ``1 / sqrt(t)`` or a schedule, give Keras's
  numbers (and the same numbers);
* the state keeps ``r`` and ``c`` only for factored leaves: its size is the
  formula's, well below Keras's (which also keeps a full ``v`` per leaf);
* ``state_from_keras`` reads Keras's layout (its ``r``/``c`` placeholders for
  vectors and its full ``v`` for matrices are dropped) and the run resumes
  on Keras's numbers.
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
from keras_oracle import build_keras  # noqa: E402
from keras_oracle import keras_trajectory  # noqa: E402
from keras_oracle import make_params  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import ours_trajectory  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

STEPS = 28
ATOL = 1e-6


def _odd_params(seed):
  rng = np.random.default_rng(seed)
  shapes = {"column": (5, 1), "row": (1, 4), "cube": (3, 1, 2),
            "vector": (1,), "scalar": ()}
  return {k: jnp.asarray(rng.normal(size=s), jnp.float32)
          for k, s in shapes.items()}


@pytest.mark.parametrize("make", [make_params, _odd_params],
                         ids=["ranks-0-to-4", "degenerate-shapes"])
def test_rule_alone_in_an_optax_chain_matches_keras(make):
  params = make(41)
  grads = varied_grads(params, STEPS, seed=41)
  own = dict(beta_2_decay=-0.6, epsilon_1=1e-20, epsilon_2=0.01,
             clip_threshold=0.5)
  expected, _ = keras_trajectory("adafactor", params, grads,
                                 learning_rate=0.1, **own)
  tx = optax.chain(ox.scale_by_adafactor(0.1, **own), optax.scale(-1.0))
  actual, state = ours_trajectory(tx, params, grads)
  assert max_deviation(expected, actual) < ATOL
  assert int(state[0].count) == STEPS
  with pytest.raises(ValueError, match="`params` must be passed.*Adafactor"):
    tx.update(grads[0], tx.init(params))


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("relative_step", [True, False])
@pytest.mark.parametrize("schedule", [False, True])
def test_rho_is_min_of_lr_and_inverse_sqrt_step(relative_step, schedule):
  """lr = 2 exceeds 1/sqrt(t) at every step: rho_t is 1/sqrt(t) throughout."""
  params = make_params(42)
  grads = varied_grads(params, STEPS, seed=42)
  if schedule:
    keras_lr = keras.optimizers.schedules.ExponentialDecay(2.0, 10, 0.5)
    ours_lr = ox.schedules.exponential_decay(2.0, 10, 0.5)
  else:
    keras_lr = ours_lr = 2.0
  expected, _ = keras_trajectory("adafactor", params, grads,
                                 learning_rate=keras_lr,
                                 relative_step=relative_step)
  actual, _ = ours_trajectory(
      ox.adafactor(ours_lr, relative_step=relative_step), params, grads)
  assert max_deviation(expected, actual) < ATOL
  capped, _ = ours_trajectory(ox.adafactor(1.0), params, grads)  # 1/sqrt(1)
  assert max_deviation(capped, actual) == 0.0


def _nbytes(tree):
  return sum(x.nbytes for x in jax.tree.leaves(tree))


def test_state_keeps_r_and_c_only_for_factored_leaves():
  params = make_params(43)
  state = ox.scale_by_adafactor().init(params)
  for (path, p), r, c, v in zip(
      jax.tree_util.tree_flatten_with_path(params)[0],
      jax.tree.leaves(state.r, is_leaf=lambda x: x is None),
      jax.tree.leaves(state.c, is_leaf=lambda x: x is None),
      jax.tree.leaves(state.v, is_leaf=lambda x: x is None)):
    if p.ndim >= 2:
      assert (r.shape, c.shape, v) == (
          p.shape[:-1], p.shape[:-2] + p.shape[-1:], None), path
    else:
      assert (r, c, v.shape) == (None, None, p.shape), path
  expected_bytes = 4 * sum(
      (int(np.prod(p.shape[:-1])) + int(np.prod(p.shape[:-2] + p.shape[-1:])))
      if p.ndim >= 2 else p.size for p in jax.tree.leaves(params))
  assert _nbytes(state) - 4 == expected_bytes  # 4: the int32 step count
  keras_opt, _ = build_keras("adafactor", params)
  assert _nbytes(state) < _nbytes([v.value for v in keras_opt.variables])
  # A wide matrix: ours is (m + n) numbers, Keras's (m + n + m * n).
  big = {"kernel": jnp.zeros((256, 512))}
  ours_big = _nbytes(ox.adafactor().init(big).inner[1])
  keras_opt, _ = build_keras("adafactor", big)
  keras_big = _nbytes([v.value for v in keras_opt.variables])
  assert ours_big - 4 == 4 * (256 + 512)
  assert keras_big > 170 * ours_big


def test_state_from_keras_reads_keras_layout():
  """13 Keras steps, import (r, c kept; Keras's full v for matrices and its
  vector placeholders dropped), 15 more steps in JAX: Keras's numbers."""
  params = make_params(44)
  grads = varied_grads(params, STEPS, seed=44)
  kw = dict(learning_rate=0.05, clip_threshold=0.5)
  expected, (keras_opt, _) = keras_trajectory("adafactor", params, grads, **kw)
  k = 13
  head, (keras_opt, opt_vars) = keras_trajectory("adafactor", params,
                                                 grads[:k], **kw)
  opt = ox.adafactor(**kw)
  state = ox.state_from_keras(opt, keras_opt, head[-1], opt_vars)
  rule = state.inner[1]
  assert int(rule.count) == k
  # Keras: iteration, learning_rate, then (r, c, v) per variable; the dense
  # kernel (4, 3) is the third leaf, the dense bias (3,) the second.
  names = [v.name for v in keras_opt.variables]
  assert names[2 + 3 * 2:2 + 3 * 3] == ["kernel", "kernel", "kernel_velocity"]
  np.testing.assert_array_equal(rule.r["dense"]["kernel"], opt_vars[8])
  np.testing.assert_array_equal(rule.c["dense"]["kernel"], opt_vars[9])
  assert rule.v["dense"]["kernel"] is None
  assert opt_vars[5].dtype == jnp.int32  # the bias's r placeholder
  np.testing.assert_array_equal(rule.v["dense"]["bias"], opt_vars[7])
  assert rule.r["dense"]["bias"] is None
  got, _ = ours_trajectory(opt, head[-1], grads[k:])
  state_run = []
  params_now = head[-1]
  step = jax.jit(opt.update)
  for g in grads[k:]:
    updates, state = step(g, state, params_now)
    params_now = optax.apply_updates(params_now, updates)
    state_run.append(params_now)
  assert max_deviation(expected[k:], state_run) < ATOL
  assert max_deviation(expected[k:], got) > 100 * ATOL  # fresh state: off
