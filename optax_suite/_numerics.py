"""Learning rates and the numerics every rule shares.

Updates are computed in float32 at least and cast back to the leaf's dtype;
an untrained leaf gets a zero update, and an update that must leave a
parameter exactly as it was is -0.0.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Union

import jax
import jax.numpy as jnp

ScalarOrSchedule = Union[float, int, jax.Array, Callable[..., Any]]


def is_zero_arg_callable(fn: Callable[..., Any]) -> bool:
  """Whether `fn` is called with no argument (Keras's callable lr)."""
  try:
    sig = inspect.signature(fn)
  except (TypeError, ValueError):
    return False
  required = [
      p for p in sig.parameters.values()
      if p.default is p.empty
      and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
  ]
  return not required


def learning_rate_at(learning_rate: ScalarOrSchedule, step: jax.Array):
  """The learning rate to use at optimizer call `step`, as float32.

  `learning_rate` may be a number, a schedule `step -> lr` (optax's, ours or a
  Keras `LearningRateSchedule`) or a zero-argument callable. A zero-argument
  callable is evaluated on every `update`, which under `jax.jit` means once,
  at trace time.
  """
  if callable(learning_rate):
    if is_zero_arg_callable(learning_rate):
      value = learning_rate()
    else:
      value = learning_rate(step)
  else:
    value = learning_rate
  return jnp.asarray(value, dtype=jnp.float32)



def zero_update(g: Any) -> Any:
  """The update of a leaf that is not trained: zeros of its own dtype."""
  if g is None:
    return None
  g = jnp.asarray(g)
  if g.dtype == jax.dtypes.float0:
    return g
  return jnp.zeros_like(g)


def identity_update(g: Any) -> Any:
  """A zero update that leaves every bit of the parameter as it was.

  -0.0 is the exact identity of IEEE addition (``-0.0 + x == x`` bitwise,
  also for ``x = -0.0``, which ``+0.0`` would turn into ``+0.0``).
  """
  if g is None:
    return None
  g = jnp.asarray(g)
  if jnp.issubdtype(g.dtype, jnp.floating):
    return jnp.full_like(g, -0.0)  # Keeps g's sharding.
  return zero_update(g)


def rounded_to(x: Any, dtype: Any) -> Any:
  """``x`` (float32 or wider) rounded to the values of the narrower ``dtype``.

  ``x.astype(dtype).astype(x.dtype)`` says the same, but XLA may drop such a
  pair of conversions (it allows excess precision), so the rounding would
  depend on how the program around it is fused. ``reduce_precision`` is
  kept, and is a no-op on a value that is already of ``dtype``.
  """
  if jnp.dtype(dtype) == jnp.dtype(x.dtype):
    return x
  info = jnp.finfo(dtype)
  return jax.lax.reduce_precision(x, exponent_bits=info.nexp,
                                  mantissa_bits=info.nmant)


def compute_dtype(dtype: Any) -> Any:
  """Updates are computed in float32 at least (float64 stays float64)."""
  return jnp.promote_types(dtype, jnp.float32)


def update_to(p: Any, target: Any, dtype: Any) -> Any:
  """The update of `dtype` that takes `p` to `target` (a value of p's dtype).

  `target - p` is formed in float32 at least (the difference of two bfloat16
  or float16 values is exact there) and rounded once to `dtype`, so
  `optax.apply_updates(p, u)` gives `target` bit for bit whenever that
  difference is representable in `dtype`: always when `p` and `target` have
  the same sign and lie within a factor 2 of each other (Sterbenz), and when
  `dtype` is wider than `p`'s. Otherwise no update of `dtype` may exist: the
  sums `p + u` near `target` can be spaced wider than `target`'s ulp (e.g.
  `p = 1, target = 1e-8` in float32: they are multiples of 2**-24). Then the
  parameter lands within half an ulp of `p`'s magnitude, and
  :func:`optax_suite.apply_updates` lands exactly.
  """
  wide = compute_dtype(jnp.promote_types(dtype, p.dtype))
  return (target.astype(wide) - p.astype(wide)).astype(dtype)

