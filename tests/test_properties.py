"""Invariants checked on generated inputs (hypothesis).

Each test states its invariant in its docstring. Shapes are fixed and each
configuration is compiled once (the jitted runners are cached), so the
examples only change the numbers.
"""

from __future__ import annotations

import functools
import inspect

import hypothesis
from hypothesis import strategies as st
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_suite as ox
from catalog import CATALOG
from catalog import KINDS

# Long hypothesis runs: one compile per optimizer and configuration drawn.
pytestmark = pytest.mark.slow

SETTINGS = dict(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[hypothesis.HealthCheck.too_slow])
FACTORIES = {kind: getattr(ox, kind) for kind in KINDS}
# Finite gradients keep them finite (not Adafactor: see the catalog).
FINITE = sorted(k for k in KINDS if CATALOG[k].finite_on_finite_gradients)
# Those whose step moves parameters near 0 (not a trust ratio's).
MOVING = sorted(k for k in FINITE if not CATALOG[k].trust_ratio)
N = 6  # parameters: {'a': (2,), 'b': (2, 2)} from N numbers


def _tree(flat):
  flat = jnp.asarray(flat, jnp.float32)
  return {"a": flat[:2], "b": flat[2:].reshape(2, 2)}


def _floats(bound):
  bound = float(np.float32(bound))  # representable, hence accepted
  # No subnormals: XLA on CPU flushes them to zero in arithmetic.
  return st.floats(-bound, bound, allow_nan=False, allow_infinity=False,
                   allow_subnormal=False, width=32)


def vectors(bound=1e3, shape=(N,)):
  return hnp.arrays(np.float32, shape, elements=_floats(bound))


@functools.lru_cache(maxsize=None)
def _runner(opt_key):
  """jit(run) for one optimizer: scans `grads` (steps, N) from `params`."""
  opt = _build(*opt_key)

  @jax.jit
  def run(params, grads):
    def step(carry, g):
      p, state = carry
      updates, state = opt.update(_tree(g), state, p)
      return (optax.apply_updates(p, updates), state), None
    (params, state), _ = jax.lax.scan(step, (params, opt.init(params)), grads)
    return params, state

  return run


def _build(kind, options, loss_scaled=False):
  own = inspect.signature(FACTORIES[kind]).parameters
  opt = FACTORIES[kind](**{k: v for k, v in options
                           if k in own})  # e.g. no epsilon for SGD
  return ox.loss_scale_optimizer(opt, 2.0**8, 2) if loss_scaled else opt


# Options under which the step depends on the gradient's scale (epsilon of
# the gradients' order, not the usual 1e-7 against which every first step is
# lr * sign(g)): a sum instead of a mean, or a dropped micro-step, shows.
ACC_OPTIONS = (("learning_rate", 0.01), ("weight_decay", 0.1),
               ("epsilon", 1.0))


@hypothesis.settings(**SETTINGS)
@hypothesis.given(
    kind=st.sampled_from(MOVING),
    k=st.sampled_from([2, 3]),
    params=vectors(10.0),
    grads=vectors(3.0, shape=(6, N)),
)
def test_k_distinct_micro_steps_equal_one_step_on_their_mean(kind, k, params,
                                                             grads):
  """2k calls with g_1..g_2k under accumulation k == 2 calls with the means.

  Each group of k distinct micro-step gradients updates once with its mean
  (Keras: (g + sum of the earlier micro-steps) / k), the accumulator starts
  afresh for the second group, the rule counts two update steps in both
  runs, and the decoupled decay uses the same constant learning rate. The
  means are formed in float64 here, so the runs agree to float32 rounding of
  the sums (1e-5 relative). With epsilon 1 the step depends on the scale of
  the mean, so a sum, a missing 1/k or a dropped micro-step fails.
  """
  accumulated = _runner((kind, ACC_OPTIONS + (
      ("gradient_accumulation_steps", k),)))
  single = _runner((kind, ACC_OPTIONS))
  p = _tree(params)
  g = np.asarray(grads[:2 * k], np.float64)
  means = g.reshape(2, k, N).mean(axis=1).astype(np.float32)
  got, _ = accumulated(p, jnp.asarray(g, jnp.float32))
  want, _ = single(p, jnp.asarray(means))
  for a, b, c in zip(jax.tree.leaves(got), jax.tree.leaves(want),
                     jax.tree.leaves(p)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    if np.abs(g).max() >= 1.0:  # the gradients were not all ~0: it moved
      assert np.abs(np.asarray(b) - np.asarray(c)).max() > 1e-4


@functools.lru_cache(maxsize=None)
def _clipper(name, bound):
  tx = {"clipnorm": ox.clip_by_norm, "clipvalue": ox.clip_by_value,
        "global_clipnorm": ox.clip_by_global_norm}[name](bound)
  return jax.jit(lambda g: tx.update(g, tx.init(None))[0])


@hypothesis.settings(**SETTINGS)
@hypothesis.given(
    name=st.sampled_from(["clipnorm", "clipvalue", "global_clipnorm"]),
    bound=st.sampled_from([1e-3, 0.5, 1.0, 7.0]),
    grad=vectors(1e15),
)
def test_clipping_never_exceeds_its_bound(name, bound, grad):
  """The clipped gradient is within its bound (float32 rounding: 1e-6).

  clipvalue: every |element| <= c exactly; clipnorm: every leaf's L2 norm
  <= c; global_clipnorm: the norm over all leaves <= c. Gradients already
  within the bound come back unchanged.
  """
  g = _tree(grad)
  out = _clipper(name, bound)(g)
  bound = float(np.float32(bound))  # the bound as the float32 it becomes
  leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(out)]
  if name == "clipvalue":
    assert all(np.abs(x).max() <= bound for x in leaves)
    inside = [np.abs(np.asarray(x)).max() <= bound for x in jax.tree.leaves(g)]
  elif name == "clipnorm":
    assert all(np.linalg.norm(x) <= bound * (1 + 1e-6) for x in leaves)
    inside = [np.linalg.norm(np.asarray(x, np.float64)) < bound
              for x in jax.tree.leaves(g)]
  else:
    total = np.sqrt(sum(np.sum(x**2) for x in leaves))
    assert total <= bound * (1 + 1e-6)
    norm = np.sqrt(sum(np.sum(np.asarray(x, np.float64)**2)
                       for x in jax.tree.leaves(g)))
    inside = [norm < bound * (1 - 1e-6)] * 2
  for flag, x, y in zip(inside, jax.tree.leaves(g), jax.tree.leaves(out)):
    if flag and name != "global_clipnorm":
      np.testing.assert_array_equal(x, y)
    elif flag:
      np.testing.assert_allclose(x, y, rtol=1e-6)


def _ema_lr(kind):
  """A learning rate at which 12 steps move parameters of order 10."""
  return CATALOG[kind].parity_learning_rate or 0.05


@functools.lru_cache(maxsize=None)
def _ema_runner(kind, frequency):
  """jit(run) with the EMA momentum a traced argument: one compile.

  Returns our final parameters and EMA, and the same computed independently:
  the optimizer without EMA, and Keras's EMA formula written out here.
  """

  @jax.jit
  def run(params, grads, momentum):
    opt = FACTORIES[kind](learning_rate=_ema_lr(kind), use_ema=True,
                          ema_momentum=momentum,
                          ema_overwrite_frequency=frequency)
    plain = FACTORIES[kind](learning_rate=_ema_lr(kind))

    def step(carry, g):
      p, state = carry
      updates, state = opt.update(_tree(g), state, p)
      return (optax.apply_updates(p, updates), state), None
    (final, state), _ = jax.lax.scan(step, (params, opt.init(params)), grads)

    def reference_step(carry, g):
      # Keras: average <- m * average + (1 - m) * new, m = 0 on the first
      # step; the parameters become the average when (t + 1) % f == 0.
      p, state, average, t = carry
      updates, state = plain.update(_tree(g), state, p)
      p = optax.apply_updates(p, updates)
      m = jnp.where(t == 0, 0.0, momentum)
      average = jax.tree.map(lambda a, w: m * a + (1 - m) * w, average, p)
      if frequency is not None:
        p = jax.tree.map(
            lambda a, w: jnp.where((t + 1) % frequency == 0, a, w), average, p)
      return (p, state, average, t + 1), None
    carry = (params, plain.init(params), params, 0)
    (want, _, want_average, _), _ = jax.lax.scan(reference_step, carry, grads)
    return final, ox.finalize_variable_values(final, state), want, want_average

  return run


@hypothesis.settings(**SETTINGS)
@hypothesis.given(
    kind=st.sampled_from(MOVING),
    momentum=st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999, 1.0]),
    frequency=st.sampled_from([None, 3]),
    params=vectors(10.0),
    grads=vectors(1e3, shape=(12, N)),
)
def test_ema_follows_keras_formula_on_moving_params(kind, momentum, frequency,
                                                    params, grads):
  """The EMA is Keras's average of the moving parameters, step by step.

  Twelve calls with any gradients, momentum and overwrite frequency; the
  parameters move by the optimizer's own steps (checked, unless every
  gradient drawn is ~0). The average from
  `finalize_variable_values` and the parameters (overwritten every 3rd step
  when asked) equal an independent run: the optimizer without EMA, and the
  formula above applied to its parameters. Both sides round the same
  float32 expression, fused differently at most, so 2 ulps of the leaf's
  largest value per step bound them: rtol 1e-6 over parameters of order 10.
  """
  p = _tree(params)
  final, average, want, want_average = _ema_runner(kind, frequency)(
      p, jnp.asarray(grads), jnp.float32(momentum))
  for a, b, c, d, e in zip(jax.tree.leaves(final), jax.tree.leaves(want),
                           jax.tree.leaves(average),
                           jax.tree.leaves(want_average), jax.tree.leaves(p)):
    scale = max(np.abs(np.asarray(e)).max(), 1.0)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(c, d, rtol=0, atol=1e-6 * scale)
    if np.abs(grads).max() >= 1.0:  # the gradients were not all ~0: it moved
      assert np.abs(np.asarray(b) - np.asarray(e)).max() > 1e-4


# (options, wrapped in loss_scale_optimizer): two compiles per optimizer.
OPTIONS = [
    ((("weight_decay", 0.05), ("clipnorm", 1.0),
      ("gradient_accumulation_steps", 3), ("use_ema", True),
      ("ema_overwrite_frequency", 2)), True),
    ((("global_clipnorm", 0.5), ("loss_scale_factor", 128.0)), False),
]


@hypothesis.settings(**SETTINGS)
@hypothesis.given(
    kind=st.sampled_from(FINITE),
    options=st.sampled_from(OPTIONS),
    magnitude=st.sampled_from([1e-30, 1e-3, 1.0, 1e6, 1e15]),
    params=vectors(1e3),
    grads=vectors(1.0, shape=(10, N)),
    zeros=hnp.arrays(np.bool_, (10, N)),
)
def test_finite_gradients_never_make_state_non_finite(
    kind, options, magnitude, params, grads, zeros):
  """Finite gradients (|g| <= 1e15, exact zeros included) => finite state.

  Ten steps with any of the options and with or without loss scaling: the
  parameters and every leaf of the optimizer state stay finite. (1e15 keeps
  g**2 inside float32; a larger finite gradient overflows Adam's and
  RMSprop's second moment, as in Keras: see test_bad_input.py.)
  """
  options, loss_scaled = options
  run = _runner((kind, (("learning_rate", 0.01),) + options, loss_scaled))
  g = jnp.where(jnp.asarray(zeros), 0.0, jnp.asarray(grads) * magnitude)
  final, state = run(_tree(params), g)
  for x in jax.tree.leaves((final, state)):
    assert bool(jnp.isfinite(x).all()), x


@functools.lru_cache(maxsize=None)
def _chunked_runner(key, chunks):
  """jit(run) that scans the steps in `chunks` pieces, state carried over."""
  opt = _build(*key)

  @jax.jit
  def run(params, grads):
    def step(carry, g):
      p, state = carry
      updates, state = opt.update(_tree(g), state, p)
      return (optax.apply_updates(p, updates), state), None
    carry = (params, opt.init(params))
    for piece in jnp.split(grads, chunks):
      carry, _ = jax.lax.scan(step, carry, piece)
    return carry

  return run


def _eager_run(key, params, grads):
  """The same run with no jit anywhere: init and update op by op."""
  opt = _build(*key)
  state = opt.init(params)
  for g in grads:
    updates, state = opt.update(_tree(g), state, params)
    params = optax.apply_updates(params, updates)
  return params, state


@hypothesis.settings(**dict(SETTINGS, max_examples=8))
@hypothesis.given(
    params=vectors(10.0),
    grads=vectors(1e3, shape=(12, N)),
)
def test_run_resumed_from_its_carried_state_is_the_same_run(params, grads):
  """Splitting a run into pieces, the state carried over, changes no bit.

  Adam with every option and loss scaling (accumulation 3, EMA overwrite
  every 2 update steps): the 12 steps as one scan, and as scans of 5 + 2 + 5
  steps (so the pieces end mid-accumulation), give the same parameters and
  state bit for bit: everything a step needs lives in the state.
  """
  key = ("adam", (("learning_rate", 0.01),) + OPTIONS[0][0], True)
  p, g = _tree(params), jnp.asarray(grads)
  whole = _chunked_runner(key, ())(p, g)
  pieces = _chunked_runner(key, (5, 7))(p, g)
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(pieces)):
    np.testing.assert_array_equal(a, b)


def test_eager_run_is_the_jitted_run():
  """Eager (op by op, `init` too) and jitted runs agree.

  Same configuration, 6 steps (two updates of 3 micro-steps, an EMA
  overwrite). They hold the same state structure and dtypes and the same
  numbers up to fusion rounding (1e-6 of the leaf's magnitude): Python
  branching on traced values, or a state that `init` builds differently
  under jit (issue 9's rmsprop momentum), would differ.
  """
  key = ("adam", (("learning_rate", 0.01),) + OPTIONS[0][0], True)
  rng = np.random.default_rng(0)
  p = _tree(rng.normal(size=N) * 3)
  g = jnp.asarray(rng.normal(size=(6, N)) * 10, jnp.float32)
  whole = _chunked_runner(key, ())(p, g)
  eager = _eager_run(key, p, g)
  assert jax.tree.structure(eager) == jax.tree.structure(whole)
  for a, c in zip(jax.tree.leaves(whole), jax.tree.leaves(eager)):
    assert a.dtype == c.dtype and a.shape == c.shape
    scale = max(np.abs(np.asarray(a, np.float64)).max(), 1.0)
    np.testing.assert_allclose(c, a, rtol=0, atol=1e-6 * scale)
