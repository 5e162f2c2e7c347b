"""The schedules' one public form: snake_case factories with Keras's
signatures, each validating its arguments (``_schedules._checks``, in Keras's
wording) and returning a small frozen dataclass: hashable (a valid static
argument of a jitted function), callable as ``step -> float32`` (the maths is
in ``_maths``), and holding exactly Keras's config. The dataclasses are an
implementation detail, not exported.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar, Mapping, Optional

import jax

from optax_suite import _checks
from optax_suite._schedules import _checks as _schedule_checks
from optax_suite._schedules import _maths

_non_negative = functools.partial(_schedule_checks.check_real, low=0)
_positive = functools.partial(_schedule_checks.check_real, low=0,
                              low_inclusive=False)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Base class: a frozen, hashable ``step -> float32`` schedule."""

  keras_class_name: ClassVar[str] = ""

  def __call__(self, step: Any) -> jax.Array:  # pragma: no cover
    raise NotImplementedError

  def get_config(self) -> dict[str, Any]:
    """Returns the config dict Keras's ``get_config`` would return.

    The keys and their order are those of the matching Keras class, so the
    dict can be passed to that class's ``from_config``.
    """
    config = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in config.items()}


@dataclasses.dataclass(frozen=True)
class ExponentialDecay(Schedule):
  """Made by :func:`exponential_decay`."""

  initial_learning_rate: Any
  decay_steps: Any
  decay_rate: Any
  staircase: bool
  name: Optional[str]

  keras_class_name: ClassVar[str] = "ExponentialDecay"

  def __call__(self, step: Any) -> jax.Array:
    return _maths.exponential_decay(
        step, self.initial_learning_rate, self.decay_steps, self.decay_rate,
        self.staircase)


@dataclasses.dataclass(frozen=True)
class PiecewiseConstantDecay(Schedule):
  """Made by :func:`piecewise_constant_decay`."""

  boundaries: tuple
  values: tuple
  name: Optional[str]

  keras_class_name: ClassVar[str] = "PiecewiseConstantDecay"

  def __call__(self, step: Any) -> jax.Array:
    return _maths.piecewise_constant_decay(
        step, self.boundaries, self.values)


@dataclasses.dataclass(frozen=True)
class PolynomialDecay(Schedule):
  """Made by :func:`polynomial_decay`."""

  initial_learning_rate: Any
  decay_steps: Any
  end_learning_rate: Any
  power: Any
  cycle: bool
  name: Optional[str]

  keras_class_name: ClassVar[str] = "PolynomialDecay"

  def __call__(self, step: Any) -> jax.Array:
    return _maths.polynomial_decay(
        step, self.initial_learning_rate, self.decay_steps,
        self.end_learning_rate, self.power, self.cycle)


@dataclasses.dataclass(frozen=True)
class InverseTimeDecay(Schedule):
  """Made by :func:`inverse_time_decay`."""

  initial_learning_rate: Any
  decay_steps: Any
  decay_rate: Any
  staircase: bool
  name: Optional[str]

  keras_class_name: ClassVar[str] = "InverseTimeDecay"

  def __call__(self, step: Any) -> jax.Array:
    return _maths.inverse_time_decay(
        step, self.initial_learning_rate, self.decay_steps, self.decay_rate,
        self.staircase)


@dataclasses.dataclass(frozen=True)
class CosineDecay(Schedule):
  """Made by :func:`cosine_decay`."""

  initial_learning_rate: Any
  decay_steps: Any
  alpha: Any
  name: Optional[str]
  warmup_target: Any
  warmup_steps: Any

  keras_class_name: ClassVar[str] = "CosineDecay"

  def __call__(self, step: Any) -> jax.Array:
    return _maths.cosine_decay(
        step, self.initial_learning_rate, self.decay_steps, self.alpha,
        self.warmup_target, self.warmup_steps)


@dataclasses.dataclass(frozen=True)
class CosineDecayRestarts(Schedule):
  """Made by :func:`cosine_decay_restarts`."""

  initial_learning_rate: Any
  first_decay_steps: Any
  t_mul: Any
  m_mul: Any
  alpha: Any
  name: Optional[str]

  keras_class_name: ClassVar[str] = "CosineDecayRestarts"

  def __call__(self, step: Any) -> jax.Array:
    return _maths.cosine_decay_restarts(
        step, self.initial_learning_rate, self.first_decay_steps, self.t_mul,
        self.m_mul, self.alpha)


def exponential_decay(
    initial_learning_rate,
    decay_steps,
    decay_rate,
    staircase=False,
    name="ExponentialDecay",
) -> Schedule:
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
    A schedule, callable as ``step -> float32``.

  Raises:
    ValueError: If an argument is out of range or not finite.

  Example:

  >>> sched = exponential_decay(0.1, decay_steps=10, decay_rate=0.5)
  >>> [sched(s).item() for s in (0, 10, 15)]  # the float32 values, exactly
  [0.10000000149011612, 0.05000000074505806, 0.0353553406894207]
  >>> stairs = exponential_decay(0.1, 10, 0.5, staircase=True)
  >>> stairs(15).item()
  0.05000000074505806
  """
  return ExponentialDecay(
      _non_negative("initial_learning_rate", initial_learning_rate),
      _positive("decay_steps", decay_steps),
      _non_negative("decay_rate", decay_rate),
      _schedule_checks.check_bool("staircase", staircase),
      _schedule_checks.check_optional_str("name", name),
  )


def piecewise_constant_decay(
    boundaries, values, name="PiecewiseConstant"
) -> Schedule:
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
    A schedule, callable as
    ``step -> float32``.

  Raises:
    ValueError: If the lengths do not match, ``boundaries`` is empty or not
      strictly increasing, or a number is out of range or not finite.

  Example:

  >>> sched = piecewise_constant_decay([100, 200], [1.0, 0.5, 0.1])
  >>> [sched(s).item() for s in (0, 100, 101, 200, 201)]  # float32 values
  [1.0, 1.0, 0.5, 0.5, 0.10000000149011612]
  """
  boundaries, values = _sequences(boundaries, values)
  name = _schedule_checks.check_optional_str("name", name)
  return PiecewiseConstantDecay(boundaries, values, name)


def polynomial_decay(
    initial_learning_rate,
    decay_steps,
    end_learning_rate=0.0001,
    power=1.0,
    cycle=False,
    name="PolynomialDecay",
) -> Schedule:
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
    A schedule, callable as ``step -> float32``.

  Raises:
    ValueError: If an argument is out of range or not finite.

  Example:

  >>> sched = polynomial_decay(0.1, 100, end_learning_rate=0.01, power=2.0)
  >>> [round(float(sched(s)), 6) for s in (0, 50, 100, 1000)]
  [0.1, 0.0325, 0.01, 0.01]
  """
  return PolynomialDecay(
      _non_negative("initial_learning_rate", initial_learning_rate),
      _positive("decay_steps", decay_steps),
      _non_negative("end_learning_rate", end_learning_rate),
      _non_negative("power", power),
      _schedule_checks.check_bool("cycle", cycle),
      _schedule_checks.check_optional_str("name", name),
  )


def inverse_time_decay(
    initial_learning_rate,
    decay_steps,
    decay_rate,
    staircase=False,
    name="InverseTimeDecay",
) -> Schedule:
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
    A schedule, callable as ``step -> float32``.

  Raises:
    ValueError: If an argument is out of range or not finite.

  Example:

  >>> sched = inverse_time_decay(0.1, decay_steps=1.0, decay_rate=0.5)
  >>> [sched(s).item() for s in (0, 2, 8)]  # the float32 values, exactly
  [0.10000000149011612, 0.05000000074505806, 0.019999999552965164]
  """
  return InverseTimeDecay(
      _non_negative("initial_learning_rate", initial_learning_rate),
      _positive("decay_steps", decay_steps),
      _non_negative("decay_rate", decay_rate),
      _schedule_checks.check_bool("staircase", staircase),
      _schedule_checks.check_optional_str("name", name),
  )


def cosine_decay(
    initial_learning_rate,
    decay_steps,
    alpha=0.0,
    name="CosineDecay",
    warmup_target=None,
    warmup_steps=0,
) -> Schedule:
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
    A schedule, callable as ``step -> float32``.

  Raises:
    ValueError: If an argument is out of range or not finite.

  Example:

  >>> sched = cosine_decay(0.0, 100, warmup_target=0.1, warmup_steps=10)
  >>> [round(float(sched(s)), 6) for s in (0, 5, 10, 60, 110, 500)]
  [0.0, 0.05, 0.1, 0.05, 0.0, 0.0]
  """
  return CosineDecay(
      _non_negative("initial_learning_rate", initial_learning_rate),
      _positive("decay_steps", decay_steps),
      _non_negative("alpha", alpha, high=1),
      _schedule_checks.check_optional_str("name", name),
      _non_negative("warmup_target", warmup_target, allow_none=True),
      _non_negative("warmup_steps", warmup_steps),
  )


def cosine_decay_restarts(
    initial_learning_rate,
    first_decay_steps,
    t_mul=2.0,
    m_mul=1.0,
    alpha=0.0,
    name="SGDRDecay",
) -> Schedule:
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
    A schedule, callable as
    ``step -> float32``.

  Raises:
    ValueError: If an argument is out of range or not finite.

  Example:

  >>> sched = cosine_decay_restarts(0.1, 10, t_mul=2.0, m_mul=0.5)
  >>> [round(float(sched(s)), 6) for s in (0, 5, 10, 20, 30)]
  [0.1, 0.05, 0.05, 0.025, 0.025]
  """
  return CosineDecayRestarts(
      _non_negative("initial_learning_rate", initial_learning_rate),
      _positive("first_decay_steps", first_decay_steps),
      _positive("t_mul", t_mul),
      _non_negative("m_mul", m_mul),
      _non_negative("alpha", alpha, high=1),
      _schedule_checks.check_optional_str("name", name),
  )


def _sequences(boundaries: Any, values: Any) -> tuple[tuple, tuple]:
  """Keras's checks of the piecewise schedule's lists, as tuples."""
  original_boundaries, original_values = boundaries, values
  for arg, seq in (("boundaries", boundaries), ("values", values)):
    if isinstance(seq, (str, bytes, Mapping)) or not hasattr(seq, "__len__"):
      raise ValueError(
          f"Argument `{arg}` must be a list of numbers. "
          f"Received: {arg}={seq!r}"
      )
  boundaries = list(boundaries)
  values = list(values)
  if len(boundaries) != len(values) - 1:
    raise ValueError(
        "The length of boundaries should be 1 less than the length of "
        f"values. Received: boundaries={original_boundaries!r} of length "
        f"{len(boundaries)}, and values={original_values!r} of length "
        f"{len(values)}."
    )
  if not boundaries:
    raise ValueError(
        "Argument `boundaries` must contain at least one boundary. "
        f"Received: boundaries={original_boundaries!r}"
    )
  checked_boundaries = tuple(
      _schedule_checks.check_real(f"boundaries[{i}]", b)
      for i, b in enumerate(boundaries))
  for i, b in enumerate(checked_boundaries):
    if _checks.is_concrete(b) and abs(b) > _checks.INT32_MAX:
      raise ValueError(  # The step, an int32, is compared with them.
          f"Argument `boundaries[{i}]` must be in [-(2**31 - 1), 2**31 - 1]"
          f" (the step is an int32). Received: "
          f"boundaries={original_boundaries!r}")
  checked_values = tuple(
      _schedule_checks.check_real(f"values[{i}]", v, low=0)
      for i, v in enumerate(values))
  for i in range(1, len(checked_boundaries)):
    lo, hi = checked_boundaries[i - 1], checked_boundaries[i]
    if _checks.is_concrete(lo) and _checks.is_concrete(hi) and not lo < hi:
      raise ValueError(
          "Argument `boundaries` must be strictly increasing. "
          f"Received: boundaries={list(checked_boundaries)!r} "
          f"(boundaries[{i - 1}]={lo!r} >= boundaries[{i}]={hi!r})"
      )
  return checked_boundaries, checked_values


FACTORIES: dict[str, Callable[..., Schedule]] = {
    "ExponentialDecay": exponential_decay,
    "PiecewiseConstantDecay": piecewise_constant_decay,
    "PolynomialDecay": polynomial_decay,
    "InverseTimeDecay": inverse_time_decay,
    "CosineDecay": cosine_decay,
    "CosineDecayRestarts": cosine_decay_restarts,
}
