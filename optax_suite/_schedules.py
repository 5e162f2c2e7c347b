r"""Keras 3 learning-rate schedules as optax ``step -> lr`` functions.

Each factory in this module (:func:`exponential_decay`,
:func:`piecewise_constant_decay`, :func:`polynomial_decay`,
:func:`inverse_time_decay`, :func:`cosine_decay` and
:func:`cosine_decay_restarts`) takes the same arguments, in the same order and
with the same defaults, as the matching class in
``keras.optimizers.schedules``, and returns a small frozen dataclass.  The
instance is

* an optax schedule: calling it with a step (a Python ``int`` or a possibly
  traced integer array) returns the learning rate as a ``float32`` array, so it
  can be passed wherever optax accepts ``learning_rate`` and works under
  :func:`jax.jit`, :func:`jax.vmap` and :func:`optax.inject_hyperparams`;
* hashable, so it can be a static argument of a jitted function;
* serialisable: :meth:`~_Schedule.get_config` returns exactly the config dict
  Keras's ``get_config`` returns, :func:`serialize` returns the dict
  ``keras.optimizers.schedules.serialize`` returns, and :func:`from_config`
  accepts either form (including dicts produced by Keras itself).

The numbers follow Keras's ``float32`` computation operation by operation
(same operations, same order), so they agree with Keras to ``float32``
rounding; evaluated eagerly they are bit-identical.  Deliberate differences:

* Keras computes in the dtype of ``initial_learning_rate`` (of ``values[0]``
  for the piecewise schedule), so a Python ``int`` there makes Keras cast the
  other arguments, and even pi, to ``int32`` (``0.5 -> 0``, ``pi -> 3``).
  These schedules always compute and return ``float32``, i.e. give Keras's
  numbers for the same arguments written as floats.
* For an array of steps (or :func:`jax.vmap` over steps), XLA's vectorised
  float32 division on CPU is not correctly rounded, which can put a staircase
  or cycle boundary on the wrong step; a step that is an exact multiple of
  the period is divided exactly here, as a scalar step is in Keras.
* :func:`polynomial_decay` never returns NaN where a rounding error would
  push ``1 - t / T`` below zero under a fractional power; Keras would.

Example:

>>> import optax
>>> from optax_suite import schedules
>>> sched = schedules.cosine_decay(0.1, decay_steps=100)
>>> opt = optax.sgd(learning_rate=sched)
>>> float(sched(50))
0.05
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Any, Callable, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "CosineDecay",
    "CosineDecayRestarts",
    "ExponentialDecay",
    "InverseTimeDecay",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "cosine_decay",
    "cosine_decay_restarts",
    "exponential_decay",
    "from_config",
    "inverse_time_decay",
    "piecewise_constant_decay",
    "polynomial_decay",
    "serialize",
]

# The ``module`` entry of ``keras.optimizers.schedules.serialize``'s output,
# reproduced so that Keras can deserialize what :func:`serialize` writes.
_KERAS_MODULE = "keras.optimizers.schedules"
_SERIALIZED_KEYS = ("module", "class_name", "config", "registered_name")
# Integers up to 2**24 are exactly representable in float32.
_F32_EXACT_INT = 2.0**24


# --------------------------------------------------------------------------
# Argument normalisation and validation.
# --------------------------------------------------------------------------


def _is_traced(x: Any) -> bool:
  return isinstance(x, jax.core.Tracer)


def _to_python(name: str, x: Any) -> Any:
  """Turns concrete NumPy / JAX scalars into Python scalars.

  Python scalars keep the config JSON-serialisable and the dataclass
  hashable (JAX arrays are not hashable).  Tracers are returned unchanged.
  """
  if _is_traced(x) or x is None:
    return x
  if isinstance(x, (np.ndarray, np.generic, jax.Array)):
    if np.ndim(x) != 0:
      raise ValueError(
          f"Argument `{name}` must be a scalar. Received: {name}={x!r} "
          f"with shape {np.shape(x)}."
      )
    return np.asarray(x).item()
  return x


def _check_number(
    name: str,
    x: Any,
    *,
    low: float | None = None,
    low_inclusive: bool = True,
    high: float | None = None,
    allow_none: bool = False,
) -> Any:
  """Validates a scalar hyperparameter and returns it as a Python scalar.

  Traced values are returned unchecked: their value is unknown at
  construction time.
  """
  x = _to_python(name, x)
  if _is_traced(x):
    return x
  if x is None and allow_none:
    return x
  if isinstance(x, bool) or not isinstance(x, numbers.Real):
    raise ValueError(
        f"Argument `{name}` must be a real number. Received: {name}={x!r}"
    )
  if not math.isfinite(x):
    raise ValueError(
        f"Argument `{name}` must be finite. Received: {name}={x!r}"
    )
  if low is not None:
    if low_inclusive and x < low:
      raise ValueError(
          f"Argument `{name}` must be >= {low}. Received: {name}={x!r}"
      )
    if not low_inclusive and x <= low:
      raise ValueError(
          f"Argument `{name}` must be > {low}. Received: {name}={x!r}"
      )
  if high is not None and x > high:
    raise ValueError(
        f"Argument `{name}` must be <= {high}. Received: {name}={x!r}"
    )
  return x


_non_negative = functools.partial(_check_number, low=0)
_positive = functools.partial(_check_number, low=0, low_inclusive=False)
_unit_interval = functools.partial(_check_number, low=0, high=1)


def _check_bool(name: str, x: Any) -> bool:
  x = _to_python(name, x)
  if not isinstance(x, bool):
    raise ValueError(
        f"Argument `{name}` must be a Python bool. Received: {name}={x!r}"
    )
  return x


def _check_name(name: str, x: Any) -> str | None:
  if x is not None and not isinstance(x, str):
    raise ValueError(
        f"Argument `{name}` must be a string or None. Received: {name}={x!r}"
    )
  return x


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


# --------------------------------------------------------------------------
# Schedules.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Schedule:
  """Base class: a frozen, hashable ``step -> float32`` schedule."""

  keras_class_name: ClassVar[str] = ""
  # Field name -> check(field name, value) returning the normalised value.
  _checks: ClassVar[dict[str, Callable[[str, Any], Any]]] = {}

  def __post_init__(self):
    for field, check in self._checks.items():
      object.__setattr__(self, field, check(field, getattr(self, field)))

  def __call__(self, step: Any) -> jax.Array:  # pragma: no cover
    raise NotImplementedError

  def get_config(self) -> dict[str, Any]:
    """Returns the config dict Keras's ``get_config`` would return.

    The keys and their order are those of the matching Keras class, so the
    dict can be passed to that class's ``from_config``.
    """
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class ExponentialDecay(_Schedule):
  r"""Exponential decay; see :func:`exponential_decay`."""

  initial_learning_rate: Any
  decay_steps: Any
  decay_rate: Any
  staircase: bool = False
  name: str | None = "ExponentialDecay"

  keras_class_name: ClassVar[str] = "ExponentialDecay"

  _checks: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
      "initial_learning_rate": _non_negative,
      "decay_steps": _positive,
      "decay_rate": _non_negative,
      "staircase": _check_bool,
      "name": _check_name,
  }

  def __call__(self, step: Any) -> jax.Array:
    lr, decay_steps, decay_rate = _hyper(
        self.initial_learning_rate, self.decay_steps, self.decay_rate
    )
    p = _div(_step_f32(step), decay_steps)
    if self.staircase:
      p = jnp.floor(p)
    return lr * jnp.power(decay_rate, p)


@dataclasses.dataclass(frozen=True)
class PiecewiseConstantDecay(_Schedule):
  r"""Piecewise constant schedule; see :func:`piecewise_constant_decay`."""

  boundaries: Any
  values: Any
  name: str | None = "PiecewiseConstant"

  keras_class_name: ClassVar[str] = "PiecewiseConstantDecay"

  def __post_init__(self):
    boundaries, values = self.boundaries, self.values
    for arg, seq in (("boundaries", boundaries), ("values", values)):
      if isinstance(seq, (str, bytes, Mapping)) or not hasattr(
          seq, "__len__"
      ):
        raise ValueError(
            f"Argument `{arg}` must be a list of numbers. "
            f"Received: {arg}={seq!r}"
        )
    if isinstance(boundaries, (np.ndarray, jax.Array)):
      boundaries = list(boundaries)
    if isinstance(values, (np.ndarray, jax.Array)):
      values = list(values)
    if len(boundaries) != len(values) - 1:
      raise ValueError(
          "The length of boundaries should be 1 less than the length of "
          f"values. Received: boundaries={self.boundaries!r} of length "
          f"{len(boundaries)}, and values={self.values!r} of length "
          f"{len(values)}."
      )
    if not boundaries:
      raise ValueError(
          "Argument `boundaries` must contain at least one boundary. "
          f"Received: boundaries={self.boundaries!r}"
      )
    boundaries = tuple(
        _check_number(f"boundaries[{i}]", b)
        for i, b in enumerate(boundaries)
    )
    values = tuple(
        _check_number(f"values[{i}]", v, low=0)
        for i, v in enumerate(values)
    )
    for i in range(1, len(boundaries)):
      lo, hi = boundaries[i - 1], boundaries[i]
      if not (_is_traced(lo) or _is_traced(hi)) and not lo < hi:
        raise ValueError(
            "Argument `boundaries` must be strictly increasing. "
            f"Received: boundaries={list(boundaries)!r} "
            f"(boundaries[{i - 1}]={lo!r} >= boundaries[{i}]={hi!r})"
        )
    object.__setattr__(self, "boundaries", boundaries)
    object.__setattr__(self, "values", values)
    object.__setattr__(self, "name", _check_name("name", self.name))

  def get_config(self) -> dict[str, Any]:
    return {
        "boundaries": list(self.boundaries),
        "values": list(self.values),
        "name": self.name,
    }

  def __call__(self, step: Any) -> jax.Array:
    step = jnp.asarray(step)
    # Keras converts each boundary to a tensor (Python int -> int32,
    # Python float -> float32) and then casts it to the step's dtype, so
    # with an integer step a float boundary is truncated toward zero.
    index = jnp.zeros(step.shape, jnp.int32)
    for b in self.boundaries:
      if isinstance(b, numbers.Integral):
        b = jnp.asarray(b, dtype=jnp.int32)
      elif isinstance(b, numbers.Real):
        b = jnp.asarray(b, dtype=jnp.float32)
      b = jnp.asarray(b).astype(step.dtype)
      index = index + (step > b).astype(jnp.int32)
    # Keras sums value_k * [step in interval k]; with strictly increasing
    # boundaries exactly one term is nonzero, so indexing is bit-identical.
    table = jnp.stack([_f32(v) for v in self.values])
    return table[index]


@dataclasses.dataclass(frozen=True)
class PolynomialDecay(_Schedule):
  r"""Polynomial decay; see :func:`polynomial_decay`."""

  initial_learning_rate: Any
  decay_steps: Any
  end_learning_rate: Any = 0.0001
  power: Any = 1.0
  cycle: bool = False
  name: str | None = "PolynomialDecay"

  keras_class_name: ClassVar[str] = "PolynomialDecay"

  _checks: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
      "initial_learning_rate": _non_negative,
      "decay_steps": _positive,
      "end_learning_rate": _non_negative,
      "power": _non_negative,
      "cycle": _check_bool,
      "name": _check_name,
  }

  def __call__(self, step: Any) -> jax.Array:
    lr, end_lr, power, decay_steps = _hyper(
        self.initial_learning_rate,
        self.end_learning_rate,
        self.power,
        self.decay_steps,
    )
    t = _step_f32(step)
    if self.cycle:
      # First multiple of decay_steps that is >= step (1 at step 0).
      multiplier = jnp.where(
          t == 0, jnp.float32(1.0), jnp.ceil(_div(t, decay_steps))
      )
      decay_steps = decay_steps * multiplier
    else:
      t = jnp.minimum(t, decay_steps)
    p = _div(t, decay_steps)
    # The clamp is a no-op whenever Keras's result is finite; it only
    # turns Keras's NaN (a float32 ``p`` just above 1 under a fractional
    # power, possible with ``cycle`` at huge steps) into end_lr.
    remaining = jnp.maximum(1 - p, jnp.float32(0.0))
    return (lr - end_lr) * jnp.power(remaining, power) + end_lr


@dataclasses.dataclass(frozen=True)
class InverseTimeDecay(_Schedule):
  r"""Inverse time decay; see :func:`inverse_time_decay`."""

  initial_learning_rate: Any
  decay_steps: Any
  decay_rate: Any
  staircase: bool = False
  name: str | None = "InverseTimeDecay"

  keras_class_name: ClassVar[str] = "InverseTimeDecay"

  _checks: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
      "initial_learning_rate": _non_negative,
      "decay_steps": _positive,
      "decay_rate": _non_negative,
      "staircase": _check_bool,
      "name": _check_name,
  }

  def __call__(self, step: Any) -> jax.Array:
    lr, decay_steps, decay_rate = _hyper(
        self.initial_learning_rate, self.decay_steps, self.decay_rate
    )
    p = _div(_step_f32(step), decay_steps)
    if self.staircase:
      p = jnp.floor(p)
    return lr / (jnp.float32(1.0) + decay_rate * p)


@dataclasses.dataclass(frozen=True)
class CosineDecay(_Schedule):
  r"""Cosine decay with optional linear warmup; see :func:`cosine_decay`."""

  initial_learning_rate: Any
  decay_steps: Any
  alpha: Any = 0.0
  name: str | None = "CosineDecay"
  warmup_target: Any = None
  warmup_steps: Any = 0

  keras_class_name: ClassVar[str] = "CosineDecay"

  _checks: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
      "initial_learning_rate": _non_negative,
      "decay_steps": _positive,
      "alpha": _unit_interval,
      "name": _check_name,
      "warmup_target": functools.partial(_non_negative, allow_none=True),
      "warmup_steps": _non_negative,
  }

  def __call__(self, step: Any) -> jax.Array:
    # Keras evaluates ``1 - alpha`` on the raw Python float (float64)
    # and only then rounds it to float32 (unlike CosineDecayRestarts).
    lr, decay_steps, one_minus_alpha, alpha = _hyper(
        self.initial_learning_rate,
        self.decay_steps,
        1 - self.alpha,
        self.alpha,
    )

    def decay(t, decay_from_lr):
      fraction = _div(t, decay_steps)
      cosine = 0.5 * (1.0 + jnp.cos(jnp.float32(math.pi) * fraction))
      return decay_from_lr * (one_minus_alpha * cosine + alpha)

    t = _step_f32(step)
    if self.warmup_target is None:
      return decay(jnp.minimum(t, decay_steps), lr)
    target, warmup_steps = _hyper(self.warmup_target, self.warmup_steps)
    t = jnp.minimum(t, decay_steps + warmup_steps)
    warm = (target - lr) * _div(t, warmup_steps) + lr
    decayed = decay(t - warmup_steps, target)
    return jnp.where(t < warmup_steps, warm, decayed)


@dataclasses.dataclass(frozen=True)
class CosineDecayRestarts(_Schedule):
  r"""Cosine decay with warm restarts; see :func:`cosine_decay_restarts`."""

  initial_learning_rate: Any
  first_decay_steps: Any
  t_mul: Any = 2.0
  m_mul: Any = 1.0
  alpha: Any = 0.0
  name: str | None = "SGDRDecay"

  keras_class_name: ClassVar[str] = "CosineDecayRestarts"

  _checks: ClassVar[dict[str, Callable[[str, Any], Any]]] = {
      "initial_learning_rate": _non_negative,
      "first_decay_steps": _positive,
      "t_mul": _positive,
      "m_mul": _non_negative,
      "alpha": _unit_interval,
      "name": _check_name,
  }

  def __call__(self, step: Any) -> jax.Array:
    lr, first_decay_steps, t_mul, m_mul, alpha = _hyper(
        self.initial_learning_rate,
        self.first_decay_steps,
        self.t_mul,
        self.m_mul,
        self.alpha,
    )
    fraction = _div(_step_f32(step), first_decay_steps)

    def constant_periods():
      i = jnp.floor(fraction)
      return i, fraction - i

    def geometric_periods():
      i = jnp.floor(
          jnp.log(1.0 - fraction * (1.0 - t_mul)) / jnp.log(t_mul)
      )
      t_mul_i = jnp.power(t_mul, i)
      elapsed = (1.0 - t_mul_i) / (1.0 - t_mul)
      return i, (fraction - elapsed) / t_mul_i

    if _is_traced(self.t_mul):
      i_geo, f_geo = geometric_periods()
      i_con, f_con = constant_periods()
      is_one = t_mul == 1.0
      i_restart = jnp.where(is_one, i_con, i_geo)
      fraction = jnp.where(is_one, f_con, f_geo)
    elif np.float32(self.t_mul) == 1.0:  # Keras tests the float32 value.
      i_restart, fraction = constant_periods()
    else:
      i_restart, fraction = geometric_periods()

    m_fac = jnp.power(m_mul, i_restart)
    cosine = 0.5 * m_fac * (
        1.0 + jnp.cos(jnp.float32(math.pi) * fraction)
    )
    return lr * ((1 - alpha) * cosine + alpha)


# --------------------------------------------------------------------------
# Factories (Keras signatures).
# --------------------------------------------------------------------------


def exponential_decay(
    initial_learning_rate,
    decay_steps,
    decay_rate,
    staircase=False,
    name="ExponentialDecay",
) -> ExponentialDecay:
  r"""Exponential decay, like Keras's ``ExponentialDecay``.

  .. math::

    \eta(t) = \eta_0 \, r^{p}, \qquad
    p = \begin{cases}
      \lfloor t / T \rfloor & \text{if staircase} \\
      t / T & \text{otherwise}
    \end{cases}

  with :math:`\eta_0` = ``initial_learning_rate``, :math:`r` =
  ``decay_rate`` and :math:`T` = ``decay_steps``.

  Args:
    initial_learning_rate: Learning rate at step 0; finite and ``>= 0``.
    decay_steps: Steps per factor of ``decay_rate``; finite and ``> 0``.
    decay_rate: Multiplicative decay per ``decay_steps``; finite, ``>= 0``.
    staircase: If ``True``, decay at discrete intervals (floor of ``p``).
    name: Name stored in the config (Keras compatibility only).

  Returns:
    An :class:`ExponentialDecay` schedule, callable as ``step -> float32``.

  Raises:
    ValueError: If an argument is out of range or not finite.

  Example:

  >>> sched = exponential_decay(0.1, decay_steps=10, decay_rate=0.5)
  >>> float(sched(0)), float(sched(10)), float(sched(15))
  (0.1, 0.05, 0.035355)
  >>> stairs = exponential_decay(0.1, 10, 0.5, staircase=True)
  >>> float(stairs(15))
  0.05
  """
  return ExponentialDecay(
      initial_learning_rate, decay_steps, decay_rate, staircase, name
  )


def piecewise_constant_decay(
    boundaries, values, name="PiecewiseConstant"
) -> PiecewiseConstantDecay:
  r"""Piecewise constant values, like Keras's ``PiecewiseConstantDecay``.

  .. math::

    \eta(t) = \begin{cases}
      v_0 & t \le b_0 \\
      v_k & b_{k-1} < t \le b_k \\
      v_n & t > b_{n-1}
    \end{cases}

  with :math:`b` = ``boundaries`` (``n`` of them) and :math:`v` = ``values``.
  As in Keras, the boundaries are compared in the dtype of the step, so with
  an integer step a float boundary is truncated toward zero.

  Args:
    boundaries: Strictly increasing finite numbers (at least one).
    values: ``len(boundaries) + 1`` finite numbers ``>= 0``.
    name: Name stored in the config (Keras compatibility only).

  Returns:
    A :class:`PiecewiseConstantDecay` schedule, callable as
    ``step -> float32``.

  Raises:
    ValueError: If the lengths do not match, ``boundaries`` is empty or not
      strictly increasing, or a number is out of range or not finite.

  Example:

  >>> sched = piecewise_constant_decay([100, 200], [1.0, 0.5, 0.1])
  >>> [float(sched(s)) for s in (0, 100, 101, 200, 201)]
  [1.0, 1.0, 0.5, 0.5, 0.1]
  """
  return PiecewiseConstantDecay(boundaries, values, name)


def polynomial_decay(
    initial_learning_rate,
    decay_steps,
    end_learning_rate=0.0001,
    power=1.0,
    cycle=False,
    name="PolynomialDecay",
) -> PolynomialDecay:
  r"""Polynomial decay, like Keras's ``PolynomialDecay``.

  .. math::

    \eta(t) = (\eta_0 - \eta_{\text{end}})
      \left(1 - \frac{t'}{T'}\right)^{k} + \eta_{\text{end}}

  with :math:`k` = ``power``.  Without ``cycle``, :math:`t' = \min(t, T)`
  and :math:`T' = T` = ``decay_steps``; with ``cycle``, :math:`t' = t` and
  :math:`T' = T \lceil t / T \rceil` (:math:`T' = T` at :math:`t = 0`), so
  the decay restarts from :math:`\eta_0` after every multiple of :math:`T`.

  Args:
    initial_learning_rate: Learning rate at step 0; finite and ``>= 0``.
    decay_steps: Length of the decay; finite and ``> 0``.
    end_learning_rate: Learning rate reached at ``decay_steps``; finite
      and ``>= 0``.
    power: Exponent of the polynomial; finite and ``>= 0``.
    cycle: Whether to restart the decay after each ``decay_steps``.
    name: Name stored in the config (Keras compatibility only).

  Returns:
    A :class:`PolynomialDecay` schedule, callable as ``step -> float32``.

  Raises:
    ValueError: If an argument is out of range or not finite.

  Example:

  >>> sched = polynomial_decay(0.1, 100, end_learning_rate=0.01, power=2.0)
  >>> [round(float(sched(s)), 6) for s in (0, 50, 100, 1000)]
  [0.1, 0.0325, 0.01, 0.01]
  """
  return PolynomialDecay(
      initial_learning_rate, decay_steps, end_learning_rate, power, cycle,
      name,
  )


def inverse_time_decay(
    initial_learning_rate,
    decay_steps,
    decay_rate,
    staircase=False,
    name="InverseTimeDecay",
) -> InverseTimeDecay:
  r"""Inverse time decay, like Keras's ``InverseTimeDecay``.

  .. math::

    \eta(t) = \frac{\eta_0}{1 + r \, p}, \qquad
    p = \begin{cases}
      \lfloor t / T \rfloor & \text{if staircase} \\
      t / T & \text{otherwise}
    \end{cases}

  with :math:`r` = ``decay_rate`` and :math:`T` = ``decay_steps``.

  Args:
    initial_learning_rate: Learning rate at step 0; finite and ``>= 0``.
    decay_steps: Time scale of the decay; finite and ``> 0``.
    decay_rate: Decay rate; finite and ``>= 0``.
    staircase: If ``True``, decay at discrete intervals (floor of ``p``).
    name: Name stored in the config (Keras compatibility only).

  Returns:
    An :class:`InverseTimeDecay` schedule, callable as ``step -> float32``.

  Raises:
    ValueError: If an argument is out of range or not finite.

  Example:

  >>> sched = inverse_time_decay(0.1, decay_steps=1.0, decay_rate=0.5)
  >>> float(sched(0)), float(sched(2)), float(sched(8))
  (0.1, 0.05, 0.02)
  """
  return InverseTimeDecay(
      initial_learning_rate, decay_steps, decay_rate, staircase, name
  )


def cosine_decay(
    initial_learning_rate,
    decay_steps,
    alpha=0.0,
    name="CosineDecay",
    warmup_target=None,
    warmup_steps=0,
) -> CosineDecay:
  r"""Cosine decay with optional linear warmup, like Keras's ``CosineDecay``.

  Without warmup (``warmup_target=None``, ``warmup_steps`` is ignored):

  .. math::

    \eta(t) = \eta_0 \left((1 - \alpha)\,
      \tfrac{1}{2}\left(1 + \cos\tfrac{\pi \min(t, T)}{T}\right)
      + \alpha\right)

  With warmup to :math:`\eta_w` = ``warmup_target`` over :math:`W` =
  ``warmup_steps`` steps, and :math:`t' = \min(t, T + W)`:

  .. math::

    \eta(t) = \begin{cases}
      (\eta_w - \eta_0)\, t' / W + \eta_0 & t' < W \\
      \eta_w \left((1 - \alpha)\,
        \tfrac{1}{2}\left(1 + \cos\tfrac{\pi (t' - W)}{T}\right)
        + \alpha\right) & \text{otherwise}
    \end{cases}

  Args:
    initial_learning_rate: Learning rate at step 0; finite and ``>= 0``.
    decay_steps: Length of the cosine decay; finite and ``> 0``.
    alpha: Final learning rate as a fraction of the decay's starting
      learning rate; in ``[0, 1]``.
    name: Name stored in the config (Keras compatibility only).
    warmup_target: Learning rate reached at the end of a linear warmup
      (finite and ``>= 0``), or ``None`` for no warmup.
    warmup_steps: Length of the warmup; finite and ``>= 0``.

  Returns:
    A :class:`CosineDecay` schedule, callable as ``step -> float32``.

  Raises:
    ValueError: If an argument is out of range or not finite.

  Example:

  >>> sched = cosine_decay(0.0, 100, warmup_target=0.1, warmup_steps=10)
  >>> [round(float(sched(s)), 6) for s in (0, 5, 10, 60, 110, 500)]
  [0.0, 0.05, 0.1, 0.05, 0.0, 0.0]
  """
  return CosineDecay(
      initial_learning_rate, decay_steps, alpha, name, warmup_target,
      warmup_steps,
  )


def cosine_decay_restarts(
    initial_learning_rate,
    first_decay_steps,
    t_mul=2.0,
    m_mul=1.0,
    alpha=0.0,
    name="SGDRDecay",
) -> CosineDecayRestarts:
  r"""Cosine decay with warm restarts, like Keras's ``CosineDecayRestarts``.

  With :math:`f = t / T_0` (:math:`T_0` = ``first_decay_steps``), the index
  of the current period :math:`i` and the fraction :math:`c \in [0, 1)`
  of it already done are

  .. math::

    i = \left\lfloor \frac{\log(1 - f (1 - \tau))}{\log \tau}
      \right\rfloor, \qquad
    c = \frac{f - \frac{1 - \tau^{i}}{1 - \tau}}{\tau^{i}}

  for :math:`\tau` = ``t_mul`` :math:`\ne 1` (:math:`i = \lfloor f \rfloor`,
  :math:`c = f - i` for :math:`\tau = 1`), and

  .. math::

    \eta(t) = \eta_0 \left((1 - \alpha)\, \tfrac{1}{2} \mu^{i}
      (1 + \cos \pi c) + \alpha\right)

  with :math:`\mu` = ``m_mul``.  Period :math:`i` lasts
  :math:`T_0 \tau^{i}` steps.  As in Keras, :math:`i` comes from a
  ``float32`` logarithm, which can round down at a restart point: with
  ``t_mul=2`` the 13th restart (:math:`f = 2^{13} - 1`) comes one step late,
  that step giving the end-of-period value :math:`\alpha\,\eta_0`.
  With ``t_mul < 1`` the periods sum to :math:`T_0 / (1 - \tau)` steps and
  the schedule is NaN past that, again as in Keras.

  Args:
    initial_learning_rate: Learning rate at step 0; finite and ``>= 0``.
    first_decay_steps: Length of the first period; finite and ``> 0``.
    t_mul: Factor by which each period is longer than the one before;
      finite and ``> 0``.
    m_mul: Factor by which each period's starting learning rate is
      scaled relative to the one before; finite and ``>= 0``.
    alpha: Minimum learning rate as a fraction of
      ``initial_learning_rate``; in ``[0, 1]``.
    name: Name stored in the config (Keras compatibility only).

  Returns:
    A :class:`CosineDecayRestarts` schedule, callable as
    ``step -> float32``.

  Raises:
    ValueError: If an argument is out of range or not finite.

  Example:

  >>> sched = cosine_decay_restarts(0.1, 10, t_mul=2.0, m_mul=0.5)
  >>> [round(float(sched(s)), 6) for s in (0, 5, 10, 20, 30)]
  [0.1, 0.05, 0.05, 0.025, 0.025]
  """
  return CosineDecayRestarts(
      initial_learning_rate, first_decay_steps, t_mul, m_mul, alpha, name
  )


# --------------------------------------------------------------------------
# (De)serialisation.
# --------------------------------------------------------------------------

_CLASSES: dict[str, type[_Schedule]] = {
    cls.keras_class_name: cls
    for cls in (
        ExponentialDecay,
        PiecewiseConstantDecay,
        PolynomialDecay,
        InverseTimeDecay,
        CosineDecay,
        CosineDecayRestarts,
    )
}


def serialize(schedule: _Schedule) -> dict[str, Any]:
  """Serialises a schedule as ``keras.optimizers.schedules.serialize`` does.

  Args:
    schedule: A schedule made by one of this module's factories.

  Returns:
    A JSON-serialisable dict with ``module``, ``class_name``, ``config``
    and ``registered_name`` entries, which both :func:`from_config` and
    ``keras.optimizers.schedules.deserialize`` accept.

  Raises:
    ValueError: If ``schedule`` is not one of this module's schedules.

  Example:

  >>> serialize(exponential_decay(0.1, 10, 0.9))["class_name"]
  'ExponentialDecay'
  """
  if not isinstance(schedule, _Schedule) or type(schedule) not in (
      _CLASSES.values()
  ):
    raise ValueError(
        "Argument `schedule` must be a schedule from this module. "
        f"Received: schedule={schedule!r}"
    )
  return {
      "module": _KERAS_MODULE,
      "class_name": schedule.keras_class_name,
      "config": schedule.get_config(),
      "registered_name": None,
  }


def from_config(
    config: Mapping[str, Any], class_name: str | None = None
) -> _Schedule:
  """Rebuilds a schedule from a Keras config or a serialised Keras schedule.

  Args:
    config: Either the dict returned by :func:`serialize` or
      ``keras.optimizers.schedules.serialize`` (with ``class_name`` and
      ``config`` entries, optionally ``module`` and
      ``registered_name``), or a plain ``get_config()`` dict, in which
      case ``class_name`` is required.
    class_name: Keras class name, e.g. ``"ExponentialDecay"``.  Needed for
      a plain config dict; for a serialised dict it must match the
      dict's own ``class_name`` if given.

  Returns:
    The schedule described by ``config``.

  Raises:
    ValueError: If the class name is missing or unknown, or the config
      has an unknown key, lacks a required key, or holds an invalid
      value.

  Example:

  >>> sched = from_config(
  ...     {"initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.5},
  ...     class_name="ExponentialDecay")
  >>> float(sched(10))
  0.05
  """
  if not isinstance(config, Mapping):
    raise ValueError(
        f"Argument `config` must be a dict. Received: config={config!r}"
    )
  if "class_name" in config:
    for key in config:
      if key not in _SERIALIZED_KEYS:
        raise ValueError(
            f"Unknown key {key!r} in serialized schedule. Expected "
            f"only {list(_SERIALIZED_KEYS)}. Received: "
            f"{key}={config[key]!r}"
        )
    if class_name is not None and class_name != config["class_name"]:
      raise ValueError(
          f"Argument `class_name` does not match the serialized "
          f"class_name. Received: class_name={class_name!r} and "
          f"config['class_name']={config['class_name']!r}"
      )
    class_name = config["class_name"]
    if "config" not in config:
      raise ValueError(
          "Serialized schedule has no 'config' entry. Received: "
          f"config={dict(config)!r}"
      )
    config = config["config"]
    if not isinstance(config, Mapping):
      raise ValueError(
          "Serialized schedule's 'config' entry must be a dict. "
          f"Received: config={config!r}"
      )
  if class_name is None:
    raise ValueError(
        "Argument `class_name` is required for a plain config dict "
        f"(one without a 'class_name' entry). Received: class_name=None "
        f"and config={dict(config)!r}"
    )
  if class_name not in _CLASSES:
    raise ValueError(
        f"Unknown schedule class name. Expected one of {sorted(_CLASSES)}. "
        f"Received: class_name={class_name!r}"
    )
  cls = _CLASSES[class_name]
  fields = [f for f in dataclasses.fields(cls) if f.init]
  names = {f.name for f in fields}
  for key, value in config.items():
    if key not in names:
      raise ValueError(
          f"Unknown config key {key!r} for {class_name}. Expected keys "
          f"from {[f.name for f in fields]}. Received: {key}={value!r}"
      )
  for f in fields:
    if (
        f.name not in config
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ):
      raise ValueError(
          f"Missing required config key {f.name!r} for {class_name}. "
          f"Received: config={dict(config)!r}"
      )
  return cls(**config)
