"""Keras's ScheduleFreeAdamW as an optax transformation, and its eval point."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import chex
import jax.numpy as jnp
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _trees
from optax_suite._options import weight_decay as _weight_decay


class ScaleByScheduleFreeAdamwState(NamedTuple):
  """State of :func:`scale_by_schedule_free_adamw`.

  The parameters are Keras's training point ``y``; ``momentum`` is the point
  ``z`` the gradient steps move (it starts at the parameters). The averaged
  point ``x`` is not stored: :func:`schedule_free_eval_params` recovers it.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> tx = ox.scale_by_schedule_free_adamw(0.1, beta_2=0.75)
    >>> _, state = tx.update(jnp.array([2.0]), tx.init(jnp.ones(1)),
    ...                      jnp.ones(1))
    >>> state.momentum, state.velocity
    (Array([0.9], dtype=float32), Array([1.], dtype=float32))
    >>> state.beta_1
    Array(0.9, dtype=float32)
  """
  count: chex.Array  # int32 [], update steps taken (Keras `iterations`).
  momentum: optax.Updates  # like params (slot dtype), Keras's `z`.
  velocity: optax.Updates  # like params (slot dtype), second moment.
  beta_1: chex.Array  # float32 [], the interpolation, for the eval point.
  # `beta_1` is no Keras slot: `state_from_keras` keeps its `init` value
  # (KERAS.non_slots).


def _check_beta_1(beta_1: Any) -> None:
  """beta_1 in (0, 1]: Keras divides by it to recover the average."""
  _checks.check_number("beta_1", beta_1)
  v = _checks.as_float(beta_1)  # pylint: disable=protected-access
  if v is not None and not (math.isfinite(v) and 0 < v <= 1):
    raise ValueError(
        "`beta_1` must be in the range (0, 1] (the average is recovered by "
        f"dividing by it). Received: beta_1={beta_1!r}")


def _check_warmup_steps(warmup_steps: Any) -> None:
  try:
    _checks.check_int_at_least("warmup_steps", warmup_steps, 0)
  except ValueError:
    raise ValueError(
        "`warmup_steps` must be an integer >= 0. "
        f"Received: warmup_steps={warmup_steps!r}") from None


def scale_by_schedule_free_adamw(
    learning_rate: _numerics.ScalarOrSchedule = 1.0,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
    warmup_steps: int = 0,
    *,
    slot_dtype: Optional[Any] = None,
) -> optax.GradientTransformation:
  r"""Scales updates by Keras's Schedule-Free AdamW rule.

  The parameters are the training point :math:`y`; the state keeps
  :math:`z` (``momentum``, starting at the parameters) and :math:`v`. With
  :math:`t` the update step (from 1), :math:`c_t = 1/t` and
  :math:`\eta_t = \eta \min(t / \text{warmup}, 1)` (just :math:`\eta`
  without warmup):

  .. math::
    v &\leftarrow v + (g^2 - v)(1 - \beta_2) \\
    z' &= z - \eta_t g / (\sqrt{v / (1 - \beta_2^t)} + \epsilon) \\
    x &= (y - (1 - \beta_1) z) / \beta_1 \\
    x' &= (1 - c_t) x + c_t z' \\
    y' &= (1 - \beta_1) z' + \beta_1 x'

  The average :math:`x` is recovered from :math:`y` and the old :math:`z`,
  as Keras does, so it needs ``params`` (the current :math:`y`) in
  ``update``. The output :math:`y - y'` points up the gradient (negate it
  to apply). :func:`schedule_free_eval_params` gives :math:`x`, the point
  to evaluate at. Low-precision leaves are computed in float32.

  Args:
    learning_rate: number or schedule ``step -> lr`` (step = update count).
    beta_1: interpolation between ``z`` and ``x``, in (0, 1].
    beta_2: decay rate of the second moment, in [0, 1).
    epsilon: added to the bias-corrected root, >= 0.
    warmup_steps: update steps of linear learning-rate warmup (0: none).
    slot_dtype: dtype of ``z`` and ``v``; default the parameter's dtype.

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = optax.chain(ox.scale_by_schedule_free_adamw(0.1, beta_1=0.5),
    ...                  optax.scale(-1.0))
    >>> params = jnp.array([1.0])
    >>> state = tx.init(params)
    >>> updates, state = tx.update(jnp.array([2.0]), state, params)
    >>> params = optax.apply_updates(params, updates)  # z = 0.9, x = z
    >>> params, ox.schedule_free_eval_params(params, state)
    (Array([0.9], dtype=float32), Array([0.9], dtype=float32))
  """
  _checks.check_learning_rate(learning_rate)
  _check_beta_1(beta_1)
  _checks.check_unit_interval("beta_2", beta_2)
  _checks.check_non_negative("epsilon", epsilon)
  _check_warmup_steps(warmup_steps)

  def init_fn(params):
    def copy(p):  # z starts at the parameters (a copy: both may be donated).
      z = _trees.copy_of(p)
      return None if z is None else z.astype(slot_dtype or p.dtype)
    return ScaleByScheduleFreeAdamwState(
        jnp.zeros([], jnp.int32), _trees.tree_map(copy, params),
        _trees.slots(params, slot_dtype), jnp.asarray(beta_1, jnp.float32))

  def update_fn(updates, state, params=None):
    _trees.check_params(params, "ScheduleFreeAdamW (it steps from `params`)")
    lr = _numerics.learning_rate_at(learning_rate, state.count)
    t = (state.count + 1).astype(jnp.float32)
    if not _checks.is_concrete(warmup_steps) or warmup_steps > 0:
      lr = lr * jnp.minimum(t / jnp.asarray(warmup_steps, jnp.float32), 1.0)
    b1 = jnp.asarray(beta_1, jnp.float32)
    b2 = jnp.asarray(beta_2, jnp.float32)
    bias_correction_2 = 1 - jnp.power(b2, t)
    c = 1.0 / t

    def leaf(z, g, v, y):
      if z is None:
        return _numerics.zero_update(g), None, None
      dt = _numerics.compute_dtype(g.dtype)
      g32, v32, z_old = g.astype(dt), v.astype(dt), z.astype(dt)
      y32 = y.astype(dt)
      v32 = v32 + (jnp.square(g32) - v32) * (1 - b2).astype(dt)
      denom = jnp.sqrt(v32 / bias_correction_2.astype(dt)) + epsilon
      z_new = z_old - (lr.astype(dt) * g32) / denom
      one_minus_b1 = (1 - b1).astype(dt)
      x_old = (y32 - one_minus_b1 * z_old) / b1.astype(dt)
      x_new = (1 - c).astype(dt) * x_old + c.astype(dt) * z_new
      y_new = one_minus_b1 * z_new + b1.astype(dt) * x_new
      return ((y32 - y_new).astype(g.dtype), z_new.astype(z.dtype),
              v32.astype(v.dtype))

    step, z, v = _trees.tree_map_n(
        leaf, 3, state.momentum, updates, state.velocity, params)
    return step, ScaleByScheduleFreeAdamwState(
        optax.safe_increment(state.count), z, v, b1)  # y' was made with b1.

  return optax.GradientTransformation(init_fn, update_fn)


def schedule_free_eval_params(params: optax.Params, state: Any) -> optax.Params:
  r"""The averaged point :math:`x` to evaluate a schedule-free model at.

  Keras's ScheduleFreeAdamW trains at :math:`y` (the parameters) and has no
  helper for its average :math:`x`, which is where the model should be
  evaluated. This recovers it as Keras's next step does:

  .. math::
    x = (y - (1 - \beta_1) z) / \beta_1

  with :math:`z` the ``momentum`` slot and :math:`\beta_1` as the state holds
  it (an injected one included). Works on the state of
  :func:`schedule_free_adamw` or of any chain holding one
  :func:`scale_by_schedule_free_adamw`; before the first step
  :math:`x = y` (to rounding). Integer leaves come back unchanged; computed
  in float32, returned in each parameter's dtype. With ``use_ema`` take
  :func:`finalize_variable_values` first if the average is wanted instead.

  Args:
    params: the parameters (:math:`y`).
    state: an optimizer state holding one schedule-free state.

  Returns:
    A tree like ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.schedule_free_adamw(learning_rate=0.1)
    >>> params = jnp.array([1.0, -1.0])
    >>> state = opt.init(params)
    >>> for _ in range(3):
    ...   updates, state = opt.update(params, state, params)  # grad of w**2/2
    ...   params = optax.apply_updates(params, updates)
    >>> ox.schedule_free_eval_params(params, state)
    Array([ 0.8061411, -0.8061411], dtype=float32)
  """
  found = _trees.find_nodes(state, ScaleByScheduleFreeAdamwState)
  if len(found) != 1:
    raise ValueError(
        "`state` must hold exactly one ScaleByScheduleFreeAdamwState (the "
        "state of schedule_free_adamw or scale_by_schedule_free_adamw); "
        f"found {len(found)}.")
  sf = found[0]
  b1 = sf.beta_1.astype(jnp.float32)

  def leaf(y, z):
    if z is None or not _trees.is_trainable(y):
      return y
    dt = _numerics.compute_dtype(y.dtype)
    x = (y.astype(dt) - (1 - b1).astype(dt) * z.astype(dt)) / b1.astype(dt)
    return x.astype(y.dtype)

  return _trees.tree_map(leaf, params, sf.momentum)


def stepping_from_decayed_params(
    rule: optax.GradientTransformation, weight_decay, lr, weight_decay_mask,
    exclude_from_weight_decay) -> optax.GradientTransformation:
  """``rule`` handed the parameters after Keras's decoupled decay.

  Keras decays the variable (``w1 = w - w * wd * lr``) before its update
  step, and schedule-free steps from the variable itself, so the rule must
  see ``w1``, not ``w`` (the chain's decay step then turns ``w1 - d`` into
  the update). The decay is computed as the chain's is, same mask.
  """
  if weight_decay is None:
    return rule

  def update_fn(updates, state, params=None):
    _trees.check_params(params, "weight decay")
    mask = _weight_decay.decay_mask(params, weight_decay_mask,
                                    exclude_from_weight_decay)

    def decayed(p, flag):
      if flag is False or not _trees.is_trainable(p):
        return p  # None, non-float or not decaying.
      w = p.astype(_numerics.compute_dtype(p.dtype))
      return _weight_decay.decayed_weight(w, flag, weight_decay,
                                          lr.astype(w.dtype))

    w1 = _trees.tree_map(decayed, params, mask)
    return rule.update(updates, state, w1)

  return optax.GradientTransformation(rule.init, update_fn)
