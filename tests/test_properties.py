"""Invariants checked on generated inputs (hypothesis).

Each test states its invariant in its docstring. Shapes are fixed and each
configuration is compiled once (the jitted runners are cached), so the
examples only change the numbers.
"""

from __future__ import annotations

import functools

import hypothesis
from hypothesis import strategies as st
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_suite as ox

SETTINGS = dict(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[hypothesis.HealthCheck.too_slow])
FACTORIES = {"adam": ox.adam, "adamax": ox.adamax, "adadelta": ox.adadelta,
             "rmsprop": ox.rmsprop}
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
  opt = FACTORIES[kind](**dict(options))
  return ox.loss_scale_optimizer(opt, 2.0**8, 2) if loss_scaled else opt


@hypothesis.settings(**SETTINGS)
@hypothesis.given(
    kind=st.sampled_from(sorted(FACTORIES)),
    k=st.sampled_from([2, 3]),
    params=vectors(10.0),
    grad=vectors(1e3),
)
def test_k_identical_micro_steps_equal_one_step(kind, k, params, grad):
  """k calls with gradient g under accumulation k == 1 call with g.

  The accumulated mean of k copies of g is g (to float32 rounding of the
  sum), the rule runs once with update step t = 1 in both, and the
  decoupled decay uses the same constant learning rate: the parameters
  agree to 1e-5 relative.
  """
  options = (("learning_rate", 0.01), ("weight_decay", 0.1))
  accumulated = _runner((kind, options + (
      ("gradient_accumulation_steps", k),)))
  single = _runner((kind, options))
  p = _tree(params)
  got, _ = accumulated(p, jnp.tile(jnp.asarray(grad), (k, 1)))
  want, _ = single(p, jnp.asarray(grad)[None])
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


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


@functools.lru_cache(maxsize=None)
def _ema_runner(kind, frequency):
  """jit(run) with the EMA momentum a traced argument: one compile."""

  @jax.jit
  def run(params, grads, momentum):
    opt = FACTORIES[kind](learning_rate=0.0, use_ema=True,
                          ema_momentum=momentum,
                          ema_overwrite_frequency=frequency)

    def step(carry, g):
      p, state = carry
      updates, state = opt.update(_tree(g), state, p)
      return (optax.apply_updates(p, updates), state), None
    (params, state), _ = jax.lax.scan(step, (params, opt.init(params)), grads)
    return params, ox.finalize_variable_values(params, state)

  return run


@hypothesis.settings(**SETTINGS)
@hypothesis.given(
    kind=st.sampled_from(sorted(FACTORIES)),
    momentum=st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999, 1.0]),
    frequency=st.sampled_from([None, 3]),
    params=vectors(1e6),
    grads=vectors(1e3, shape=(12, N)),
)
def test_ema_of_constant_params_stays_constant(kind, momentum, frequency,
                                               params, grads):
  """With a zero learning rate (params constant), EMA == params.

  Twelve calls with any gradients, any momentum and overwrite frequency:
  the average stays equal to the parameters to float32 rounding (relative
  1e-6 per step), and overwrites keep the parameters where they were.
  (Within a few float32 `tiny` of 0, XLA's flush of subnormal products to
  zero is the only error: hence the absolute tolerance.)
  """
  p = _tree(params)
  final, average = _ema_runner(kind, frequency)(
      p, jnp.asarray(grads), jnp.float32(momentum))
  for a, b, c in zip(jax.tree.leaves(p), jax.tree.leaves(final),
                     jax.tree.leaves(average)):
    tiny = 4 * np.finfo(np.float32).tiny
    np.testing.assert_allclose(b, a, rtol=12e-6, atol=tiny)
    np.testing.assert_allclose(c, a, rtol=12e-6, atol=tiny)


# (options, wrapped in loss_scale_optimizer): two compiles per optimizer.
OPTIONS = [
    ((("weight_decay", 0.05), ("clipnorm", 1.0),
      ("gradient_accumulation_steps", 3), ("use_ema", True),
      ("ema_overwrite_frequency", 2)), True),
    ((("global_clipnorm", 0.5), ("loss_scale_factor", 128.0)), False),
]


@hypothesis.settings(**SETTINGS)
@hypothesis.given(
    kind=st.sampled_from(sorted(FACTORIES)),
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


@hypothesis.settings(**dict(SETTINGS, max_examples=8))
@hypothesis.given(
    params=vectors(10.0),
    grads=vectors(1e3, shape=(12, N)),
)
def test_runs_are_deterministic(params, grads):
  """Same inputs, same bits: twice through one jit, and a fresh jit.

  The second optimizer is built anew and compiled anew, so nothing cached
  in the first (trace or executable) decides the result. Adam with every
  option and loss scaling (one configuration: two compiles).
  """
  kind = "adam"
  key = (kind, (("learning_rate", 0.01),) + OPTIONS[0][0], True)
  p, g = _tree(params), jnp.asarray(grads)
  first = _runner(key)(p, g)
  second = _runner(key)(p, g)
  third = _runner.__wrapped__(key)(p, g)  # built and compiled anew
  for a, b, c in zip(jax.tree.leaves(first), jax.tree.leaves(second),
                     jax.tree.leaves(third)):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
