"""Keras's Lion as an optax transformation (sign of an interpolation)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Sequence

import chex
import jax.numpy as jnp
import optax

from optax_suite import _common
from optax_suite import _optimizer


class ScaleByLionState(NamedTuple):
  """State of :func:`scale_by_lion`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> tx = ox.scale_by_lion(beta_2=0.75)
    >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.zeros(1)))
    >>> state.momentum
    Array([0.5], dtype=float32)
  """
  count: chex.Array  # int32 [], update steps taken (for schedules).
  momentum: optax.Updates  # like params (slot dtype), EMA of g with beta_2.


def _check_beta_1(beta_1: Any) -> None:
  """Keras's range for Lion's beta_1 is (0, 1]: 0 would be SignSGD."""
  _common.check_number("beta_1", beta_1)
  v = _common._as_float(beta_1)  # pylint: disable=protected-access
  if v is not None and not (math.isfinite(v) and 0 < v <= 1):
    raise ValueError(
        "`beta_1` must be in the range (0, 1] (0 makes Lion SignSGD). "
        f"Received: beta_1={beta_1!r}")


def scale_by_lion(
    learning_rate: _common.ScalarOrSchedule = 1.0,
    beta_1: float = 0.9,
    beta_2: float = 0.99,
    *,
    slot_dtype: Optional[Any] = None,
) -> optax.GradientTransformation:
  r"""Scales updates by Keras's Lion rule, learning rate included.

  .. math::
    u &= \eta\,\mathrm{sign}(\beta_1 m + (1 - \beta_1) g) \\
    m &\leftarrow \beta_2 m + (1 - \beta_2) g

  ``beta_1`` interpolates for the step and ``beta_2`` is the momentum's decay,
  the roles optax's ``scale_by_lion`` gives ``b1`` and ``b2``. The step is
  taken before the momentum is updated. A zero interpolation gives a zero
  step. The output points up the gradient; low-precision leaves are computed
  in float32 and cast back.

  Args:
    learning_rate: number or schedule ``step -> lr`` (step = update count).
    beta_1: interpolation between momentum and gradient, in (0, 1].
    beta_2: decay rate of the momentum, in [0, 1].
    slot_dtype: dtype of the momentum; default the parameter's dtype.

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = optax.chain(ox.scale_by_lion(0.1), optax.scale(-1.0))
    >>> params = jnp.array([1.0, 1.0, 1.0])
    >>> updates, _ = tx.update(jnp.array([3.0, -0.5, 0.0]), tx.init(params))
    >>> optax.apply_updates(params, updates)
    Array([0.9, 1.1, 1. ], dtype=float32)
  """
  _common.check_learning_rate(learning_rate)
  _check_beta_1(beta_1)
  _common.check_unit_interval("beta_2", beta_2, closed_right=True)

  def init_fn(params):
    return ScaleByLionState(
        jnp.zeros([], jnp.int32), _common.slots(params, slot_dtype))

  def update_fn(updates, state, params=None):
    del params
    lr = _common.learning_rate_at(learning_rate, state.count)

    def leaf(m, g):
      if m is None:
        return _common.zero_update(g), None
      dt = _common.compute_dtype(g.dtype)
      g32, m32 = g.astype(dt), m.astype(dt)
      b1, b2 = jnp.asarray(beta_1, dt), jnp.asarray(beta_2, dt)
      step = lr.astype(dt) * jnp.sign(m32 * b1 + g32 * (1 - b1))
      m32 = m32 * b2 + g32 * (1 - b2)
      return step.astype(g.dtype), m32.astype(m.dtype)

    step, momentum = _common.tree_map_n(leaf, 2, state.momentum, updates)
    return step, ScaleByLionState(optax.safe_increment(state.count), momentum)

  return optax.GradientTransformation(init_fn, update_fn)


@_optimizer.with_base_doc
def lion(
    learning_rate: _common.ScalarOrSchedule = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.99,
    weight_decay: Optional[float] = None,
    clipnorm: Optional[float] = None,
    clipvalue: Optional[float] = None,
    global_clipnorm: Optional[float] = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: Optional[int] = None,
    loss_scale_factor: Optional[float] = None,
    gradient_accumulation_steps: Optional[int] = None,
    name: Optional[str] = None,
    *,
    exclude_from_weight_decay: Optional[Sequence[str]] = None,
    weight_decay_mask: Any = None,
    lazy_rows: bool = False,
) -> _optimizer.KerasOptimizer:
  """Keras 3's ``Lion``: the update rule of :func:`scale_by_lion`.

  Keras's Lion has no weight decay unless asked (``optax.lion`` defaults to
  1e-3); when given, it is the base decoupled decay ``w * weight_decay *
  lr``, applied before the sign step.

  Args:
    learning_rate: the learning rate (see below).
    beta_1: interpolation between momentum and gradient for the step, in
      (0, 1].
    beta_2: decay rate of the momentum, in [0, 1].
  {base}
  Returns:
    A :class:`KerasOptimizer` (an ``optax.GradientTransformationExtraArgs``).

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.lion(learning_rate=0.01)
    >>> params = jnp.array([1.0, -1.0])
    >>> updates, _ = opt.update(jnp.array([0.3, -2.0]), opt.init(params))
    >>> optax.apply_updates(params, updates)
    Array([ 0.99, -0.99], dtype=float32)
  """
  arguments = dict(locals())
  rule = lambda lr: scale_by_lion(lr, beta_1, beta_2)
  return _optimizer.build(KERAS, "lion", rule, arguments)


KERAS = _optimizer.KerasSpec(
    class_name="Lion", factory=lion, own_keys=("beta_1", "beta_2"),
    state_class=ScaleByLionState,
    slot_groups=lambda keras_optimizer: [[("momentum", "momentum")]])
