"""Small shared helpers: argument checks, learning rates and leaf maps.

Nothing here is public. Every transformation in the package goes through
these helpers so that the rules (which leaves are trained, how a learning rate
is read, what a bad argument gets) live in one place.
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Callable, Optional, Union

import jax
from jax.experimental import sparse as jsparse
import jax.numpy as jnp
import numpy as np

ScalarOrSchedule = Union[float, int, jax.Array, Callable[..., Any]]


# ----------------------------------------------------------------------------
# Argument checks. They run at construction on concrete values only: under
# `optax.inject_hyperparams` the same factory is called again inside `update`
# with traced hyperparameters, which cannot (and need not) be checked again.


def is_concrete(value: Any) -> bool:
  """True for Python numbers and concrete arrays, False for tracers."""
  return not isinstance(value, jax.core.Tracer)


def _as_float(value: Any) -> Optional[float]:
  if value is None or callable(value) or isinstance(value, (bool, str, bytes)):
    return None
  if not is_concrete(value):
    return None
  try:
    return float(np.asarray(value))
  except (TypeError, ValueError):
    return None


def check_number(name: str, value: Any) -> None:
  """Refuses anything that is not a real number (or a traced scalar)."""
  if isinstance(value, bool) or (
      is_concrete(value) and _as_float(value) is None
  ):
    raise ValueError(
        f"`{name}` must be a number. Received: {name}={value!r}"
    )
  check_float32(name, value)


INT32_MAX = 2**31 - 1


def check_float32(name: str, value: Any) -> None:
  """A finite number must stay finite, and a nonzero one nonzero, in float32.

  The checks run in float64, but the package stores hyperparameters as
  float32: 1e300 would become inf and 1e-50 zero. None, tracers and
  non-finite values (refused or allowed by the range checks) pass.
  """
  v = _as_float(value)
  if v is None or not math.isfinite(v):
    return
  with np.errstate(over="ignore", under="ignore"):
    v32 = np.float32(v)
  if not np.isfinite(v32) or (v != 0 and v32 == 0):
    raise ValueError(
        f"`{name}` must survive its float32 cast (stay finite, and nonzero "
        f"when nonzero: magnitudes from about 1.4e-45 to 3.4e38). "
        f"Received: {name}={value!r}")


def check_non_negative(name: str, value: Any) -> None:
  """`value` must be a finite number >= 0."""
  check_number(name, value)
  v = _as_float(value)
  if v is not None and (not math.isfinite(v) or v < 0):
    raise ValueError(
        f"`{name}` must be a finite number >= 0. Received: {name}={value!r}"
    )


def check_non_positive(name: str, value: Any) -> None:
  """`value` must be a finite number <= 0."""
  check_number(name, value)
  v = _as_float(value)
  if v is not None and (not math.isfinite(v) or v > 0):
    raise ValueError(
        f"`{name}` must be a finite number <= 0. Received: {name}={value!r}"
    )


def check_positive(name: str, value: Any) -> None:
  """`value` must be a finite number > 0."""
  check_number(name, value)
  v = _as_float(value)
  if v is not None and (not math.isfinite(v) or v <= 0):
    raise ValueError(
        f"`{name}` must be a finite number > 0. Received: {name}={value!r}"
    )


def check_unit_interval(
    name: str, value: Any, *, closed_right: bool = False
) -> None:
  """`value` must lie in [0, 1) (or [0, 1] when `closed_right`)."""
  check_number(name, value)
  v = _as_float(value)
  if v is None:  # A traced value (under `optax.inject_hyperparams`).
    return
  upper_ok = (v <= 1) if closed_right else (v < 1)
  if not (math.isfinite(v) and 0 <= v and upper_ok):
    interval = "[0, 1]" if closed_right else "[0, 1)"
    raise ValueError(
        f"`{name}` must be in the range {interval}. Received: {name}={value!r}"
    )


def check_int_at_least(name: str, value: Any, minimum: int) -> None:
  """`value` must be an integer >= `minimum` (or a concrete integer array)."""
  if not is_concrete(value):
    return
  ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
  if not ok and isinstance(value, (jax.Array, np.ndarray)):
    ok = value.ndim == 0 and jnp.issubdtype(value.dtype, jnp.integer)
  if not ok or int(value) < minimum:
    raise ValueError(
        f"`{name}` must be an integer >= {minimum} or None. "
        f"Received: {name}={value!r}"
    )
  if int(value) > INT32_MAX:
    raise ValueError(
        f"`{name}` must be an integer < 2**31 (it is counted in int32). "
        f"Received: {name}={value!r}")


def to_python_scalar(name: str, value: Any) -> Any:
  """A concrete NumPy/JAX scalar as a Python scalar; tracers, None and
  Python values unchanged. Python scalars keep configs JSON-serialisable and
  frozen dataclasses hashable (arrays are not)."""
  if not is_concrete(value) or value is None:
    return value
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    if np.ndim(value) != 0:
      raise ValueError(
          f"Argument `{name}` must be a scalar. Received: {name}={value!r} "
          f"with shape {np.shape(value)}."
      )
    return np.asarray(value).item()
  return value


def check_real(
    name: str,
    value: Any,
    *,
    low: Optional[float] = None,
    low_inclusive: bool = True,
    high: Optional[float] = None,
    allow_none: bool = False,
) -> Any:
  """A finite real scalar within bounds, returned as a Python number.

  Keras's wording for its schedules' arguments ("Argument `decay_steps` must
  be > 0. Received: decay_steps=0"). A traced value is returned unchecked.
  """
  value = to_python_scalar(name, value)
  if not is_concrete(value) or (value is None and allow_none):
    return value
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise ValueError(
        f"Argument `{name}` must be a real number. Received: {name}={value!r}"
    )
  if not math.isfinite(value):
    raise ValueError(
        f"Argument `{name}` must be finite. Received: {name}={value!r}"
    )
  check_float32(name, value)
  v = float(value)
  if low is not None and (v < low or (v == low and not low_inclusive)):
    relation = ">=" if low_inclusive else ">"
    raise ValueError(
        f"Argument `{name}` must be {relation} {low}. Received: "
        f"{name}={value!r}"
    )
  if high is not None and v > high:
    raise ValueError(
        f"Argument `{name}` must be <= {high}. Received: {name}={value!r}"
    )
  return value


def check_bool(name: str, value: Any) -> bool:
  """A Python bool (a NumPy/JAX scalar bool is accepted), returned as bool."""
  value = to_python_scalar(name, value)
  if not isinstance(value, bool):
    raise ValueError(
        f"Argument `{name}` must be a Python bool. Received: {name}={value!r}"
    )
  return value


def check_flag(name: str, value: Any) -> bool:
  """An optimizer's on/off argument: True or False (a NumPy bool too).

  Anything else is refused, so that ``"False"`` or ``0`` from a config does
  not quietly turn a feature on or off. Returns the Python bool.
  """
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  raise ValueError(
      f"`{name}` must be True or False. Received: {name}={value!r}")


def check_optional_str(name: str, value: Any) -> Optional[str]:
  """A string or None, returned unchanged."""
  if value is not None and not isinstance(value, str):
    raise ValueError(
        f"Argument `{name}` must be a string or None. Received: "
        f"{name}={value!r}"
    )
  return value


def check_learning_rate(value: Any) -> None:
  """A learning rate is a number >= 0 or a callable (schedule)."""
  if callable(value):
    return
  check_non_negative("learning_rate", value)


# ----------------------------------------------------------------------------
# Learning rates.


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


# ----------------------------------------------------------------------------
# Leaves. Only real floating-point leaves are trained; integer and boolean
# leaves get a zero update and no slot (their slot is `None`); complex leaves
# are refused at `init` with a ValueError naming them (`check_not_complex`).


def is_trainable(x: Any) -> bool:
  return (
      x is not None
      and hasattr(x, "dtype")
      and jnp.issubdtype(x.dtype, jnp.floating)
  )


def is_none(x: Any) -> bool:
  """`is_leaf` that keeps `None` leaves (jax drops them by default)."""
  return x is None


_none_is_leaf = is_none


def tree_map(fn: Callable[..., Any], tree: Any, *rest: Any) -> Any:
  """`jax.tree.map` over `tree`, handing its `None` leaves to `fn`."""
  return jax.tree.map(fn, tree, *rest, is_leaf=_none_is_leaf)


def zeros_like(p: Any, dtype: Any = None) -> Any:
  """A zero slot for a trainable leaf, `None` for any other leaf.

  The slot keeps `p`'s sharding, eagerly and under `jax.jit`. Eagerly (and
  on an explicitly sharded mesh) `jnp.zeros_like` does. Under `jax.jit` on an
  automatically sharded mesh a constant has no data dependence for the
  compiler to propagate `p`'s sharding along, so it would come out replicated
  (what optax's own `init`s do); the zeros are therefore computed from `p`
  (`|p * 0|`, with the NaN that gives for a non-finite `p` replaced by 0),
  which the compiler cannot fold into a constant.
  """
  if not is_trainable(p):
    return None
  dtype = dtype or p.dtype
  if is_concrete(p):
    return jnp.zeros_like(p, dtype=dtype)
  zero = jnp.abs(p * jnp.zeros([], p.dtype))
  zero = jnp.where(zero == 0, zero, jnp.zeros([], p.dtype))
  return zero.astype(dtype)


def copy_of(p: Any) -> Any:
  """A fresh copy of a trainable leaf (`None` for any other leaf).

  The copy owns its buffer, so a state holding it can be donated together
  with the parameters. An abstract leaf (`jax.ShapeDtypeStruct`, as optax's
  own contract tests pass to `init`) has no value to copy: it gets zeros of
  its shape, dtype and sharding.
  """
  if not is_trainable(p):
    return None
  if isinstance(p, jax.ShapeDtypeStruct):
    return zeros_like(p)
  return jnp.array(p, copy=True)


def check_not_complex(params: Any) -> None:
  """Refuses complex leaves, naming the first one's path.

  Keras's update rules are defined for real numbers only, and leaving a
  complex leaf untrained would be silent. A complex parameter can be trained
  as two real leaves (`jnp.real(z)`, `jnp.imag(z)`).
  """
  for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
    if hasattr(p, "dtype") and jnp.issubdtype(p.dtype, jnp.complexfloating):
      raise ValueError(
          "Complex parameters are not supported (Keras's optimizers are "
          "defined for real numbers): the parameter at "
          f"`params{jax.tree_util.keystr(path)}` is {p.dtype}. Train its "
          "real and imaginary parts as two real leaves.")


def slots(params: Any, dtype: Any = None) -> Any:
  """A zero slot per trainable leaf of `params` (`None` for the others).

  Every rule's `init` builds its slots here, so a complex leaf is refused
  here (see `check_not_complex`).
  """
  check_not_complex(params)
  return tree_map(lambda p: zeros_like(p, dtype), params)


def nones_like(tree: Any) -> Any:
  """A tree like `tree` with `None` at every leaf: an absent optional slot."""
  return jax.tree.map(lambda _: None, tree)


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


def check_params(params: Any, needed_for: str) -> None:
  if params is None:
    raise ValueError(
        f"`params` must be passed to `update` when {needed_for} is used: "
        "call `opt.update(grads, state, params)`."
    )


def _is_bcoo(x: Any) -> bool:
  return isinstance(x, jsparse.BCOO)


def check_same_structure(grads: Any, params: Any) -> None:
  """Grads and params must have the same tree structure."""
  if params is None:
    return
  # A None grad for an array param differs; a row-sparse BCOO is one leaf.
  # (Any: jax's PyTreeDef stub declares no __eq__.)
  gs: Any = jax.tree.structure(grads, is_leaf=_is_bcoo)
  ps: Any = jax.tree.structure(params)
  if gs != ps:
    raise ValueError(
        "The structure of the gradients does not match the structure of "
        f"`params`.\n  grads:  {gs}\n  params: {ps}"
    )


class _Pack:
  """An opaque leaf holding several per-leaf results (not a pytree node)."""
  __slots__ = ("values",)

  def __init__(self, values):
    self.values = values


def tree_map_n(fn: Callable[..., tuple], n: int, tree: Any, *rest: Any):
  """Maps `fn` (returning an `n`-tuple) over leaves; returns `n` trees."""
  packed = tree_map(lambda *a: _Pack(fn(*a)), tree, *rest)
  return tuple(
      jax.tree.map(lambda pk, i=i: pk.values[i], packed) for i in range(n)
  )


def find_nodes(tree: Any, cls: Union[type, tuple[type, ...]]) -> list:
  """Every node of type `cls` in `tree` (e.g. an `EmaState` in a chain's)."""
  return [
      node for node in jax.tree.leaves(
          tree, is_leaf=lambda x: isinstance(x, cls))
      if isinstance(node, cls)
  ]


def path_name(path: Any) -> str:
  """A key path joined with "/", as Keras joins layer paths.

  Dict keys, attribute and field names, and sequence indices (as decimal
  strings) are the parts: ``{'encoder': {'dense': {'kernel': w}}}`` gives
  ``"encoder/dense/kernel"`` for ``w``.
  """
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)
