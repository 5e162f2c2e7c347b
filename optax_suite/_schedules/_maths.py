"""The schedules' arithmetic: Keras's float32 operations, in Keras's order.

One function per schedule, ``step`` and the hyperparameters in, a float32
learning rate out. The hyperparameters may be Python numbers or traced
arrays; the flags (``staircase``, ``cycle``) and the piecewise boundaries are
Python values.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from optax_suite import _checks

# Integers up to 2**24 are exactly representable in float32.
_F32_EXACT_INT = 2.0**24


def _f32(x: Any) -> jax.Array:
  """``ops.cast(x, "float32")`` / ``ops.convert_to_tensor`` for a float."""
  return jnp.asarray(x, dtype=jnp.float32)


def _hyper(*values: Any) -> tuple[jax.Array, ...]:
  """Casts hyperparameters to float32 and hides them from XLA's optimiser.

  Keras evaluates its schedules op by op on runtime values.  Under
  :func:`jax.jit`, XLA would see our Python-float hyperparameters as
  compile-time constants: it rewrites ``x / c`` as ``x * (1 / c)`` and folds
  ``log(c)`` at compile time.  Each such change moves results by an ulp,
  which is enough to make ``1 - t / T`` negative at ``t == T`` (NaN under a
  fractional power) or to move a ``floor`` at a restart point.  An
  optimisation barrier keeps them runtime values, so the jitted arithmetic
  is the same as Keras's.
  """
  return jax.lax.optimization_barrier(tuple(_f32(v) for v in values))


def _div(t: jax.Array, d: jax.Array) -> jax.Array:
  """``t / d`` in float32, made exact when ``t`` is a multiple of ``d``.

  IEEE division (what Keras gets for a scalar step) returns exactly ``k``
  when ``t == k * d``, so there this is a no-op.  XLA's vectorised CPU
  division (an array of steps, or :func:`jax.vmap` over steps) is only
  accurate to about an ulp, which at exact multiples would move
  ``floor``/``ceil`` (staircase, ``cycle``, restarts) to the wrong side.
  For integer-valued ``t`` and ``d`` below ``2**24`` the float32 product
  ``k * d`` is exact, so ``k * d == t`` proves that ``t`` is a multiple.
  """
  q = t / d
  k = jnp.round(q)
  exact = (
      (jnp.abs(t) < _F32_EXACT_INT)
      & (jnp.abs(d) < _F32_EXACT_INT)
      & (d == jnp.floor(d))
      & (k * d == t)
  )
  return jnp.where(exact, k, q)


def _step_f32(step: Any) -> jax.Array:
  """Keras's ``ops.cast(step, dtype)`` with ``dtype == float32``."""
  return jnp.asarray(step).astype(jnp.float32)


def exponential_decay(step, initial_learning_rate, decay_steps, decay_rate,
                      staircase: bool) -> jax.Array:
  lr, decay_steps, decay_rate = _hyper(
      initial_learning_rate, decay_steps, decay_rate)
  p = _div(_step_f32(step), decay_steps)
  if staircase:
    p = jnp.floor(p)
  return lr * jnp.power(decay_rate, p)


def piecewise_constant_decay(step, boundaries: Sequence[Any],
                             values: Sequence[Any]) -> jax.Array:
  step = jnp.asarray(step)
  # Keras converts each boundary to a tensor (Python int -> int32, Python
  # float -> float32) and then casts it to the step's dtype, so with an
  # integer step a float boundary is truncated toward zero.
  index = jnp.zeros(step.shape, jnp.int32)
  for b in boundaries:
    if isinstance(b, numbers.Integral):
      b = jnp.asarray(b, dtype=jnp.int32)
    elif isinstance(b, numbers.Real):
      b = jnp.asarray(b, dtype=jnp.float32)
    b = jnp.asarray(b).astype(step.dtype)
    index = index + (step > b).astype(jnp.int32)
  # Keras sums value_k * [step in interval k]; with strictly increasing
  # boundaries exactly one term is nonzero, so indexing is bit-identical.
  table = jnp.stack([_f32(v) for v in values])
  return table[index]


def polynomial_decay(step, initial_learning_rate, decay_steps,
                     end_learning_rate, power, cycle: bool) -> jax.Array:
  lr, end_lr, power, decay_steps = _hyper(
      initial_learning_rate, end_learning_rate, power, decay_steps)
  t = _step_f32(step)
  if cycle:
    # First multiple of decay_steps that is >= step (1 at step 0).
    multiplier = jnp.where(
        t == 0, jnp.float32(1.0), jnp.ceil(_div(t, decay_steps)))
    decay_steps = decay_steps * multiplier
  else:
    t = jnp.minimum(t, decay_steps)
  p = _div(t, decay_steps)
  # The clamp is a no-op whenever Keras's result is finite; it only turns
  # Keras's NaN (a float32 ``p`` just above 1 under a fractional power,
  # possible with ``cycle`` at huge steps) into end_lr.
  remaining = jnp.maximum(1 - p, jnp.float32(0.0))
  return (lr - end_lr) * jnp.power(remaining, power) + end_lr


def inverse_time_decay(step, initial_learning_rate, decay_steps, decay_rate,
                       staircase: bool) -> jax.Array:
  lr, decay_steps, decay_rate = _hyper(
      initial_learning_rate, decay_steps, decay_rate)
  p = _div(_step_f32(step), decay_steps)
  if staircase:
    p = jnp.floor(p)
  return lr / (jnp.float32(1.0) + decay_rate * p)


def cosine_decay(step, initial_learning_rate, decay_steps, alpha,
                 warmup_target, warmup_steps) -> jax.Array:
  # Keras evaluates ``1 - alpha`` on the raw Python float (float64) and only
  # then rounds it to float32 (unlike CosineDecayRestarts).
  lr, decay_steps, one_minus_alpha, alpha = _hyper(
      initial_learning_rate, decay_steps, 1 - alpha, alpha)

  def decay(t, decay_from_lr):
    fraction = _div(t, decay_steps)
    cosine = 0.5 * (1.0 + jnp.cos(jnp.float32(math.pi) * fraction))
    return decay_from_lr * (one_minus_alpha * cosine + alpha)

  t = _step_f32(step)
  if warmup_target is None:
    return decay(jnp.minimum(t, decay_steps), lr)
  target, warmup_steps = _hyper(warmup_target, warmup_steps)
  t = jnp.minimum(t, decay_steps + warmup_steps)
  warm = (target - lr) * _div(t, warmup_steps) + lr
  decayed = decay(t - warmup_steps, target)
  return jnp.where(t < warmup_steps, warm, decayed)


def cosine_decay_restarts(step, initial_learning_rate, first_decay_steps,
                          t_mul, m_mul, alpha) -> jax.Array:
  traced_t_mul = not _checks.is_concrete(t_mul)
  unit_t_mul = not traced_t_mul and np.float32(t_mul) == 1.0  # Keras tests
  # the float32 value.
  lr, first_decay_steps, t_mul, m_mul, alpha = _hyper(
      initial_learning_rate, first_decay_steps, t_mul, m_mul, alpha)
  fraction = _div(_step_f32(step), first_decay_steps)

  def constant_periods():
    i = jnp.floor(fraction)
    return i, fraction - i

  def geometric_periods():
    i = jnp.floor(jnp.log(1.0 - fraction * (1.0 - t_mul)) / jnp.log(t_mul))
    t_mul_i = jnp.power(t_mul, i)
    elapsed = (1.0 - t_mul_i) / (1.0 - t_mul)
    return i, (fraction - elapsed) / t_mul_i

  if traced_t_mul:
    i_geo, f_geo = geometric_periods()
    i_con, f_con = constant_periods()
    is_one = t_mul == 1.0
    i_restart = jnp.where(is_one, i_con, i_geo)
    fraction = jnp.where(is_one, f_con, f_geo)
  elif unit_t_mul:
    i_restart, fraction = constant_periods()
  else:
    i_restart, fraction = geometric_periods()

  m_fac = jnp.power(m_mul, i_restart)
  cosine = 0.5 * m_fac * (1.0 + jnp.cos(jnp.float32(math.pi) * fraction))
  return lr * ((1 - alpha) * cosine + alpha)
