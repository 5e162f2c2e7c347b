"""Keras's Ftrl as an optax transformation (FTRL-Proximal, McMahan 2013)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import chex
import jax
import jax.numpy as jnp
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _trees
from optax_suite._options import weight_decay as _weight_decay


class ScaleByFtrlState(NamedTuple):
  """State of :func:`scale_by_ftrl`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> tx = ox.scale_by_ftrl(learning_rate=1.0, initial_accumulator_value=1.0)
    >>> w = jnp.array([0.5])
    >>> _, state = tx.update(jnp.array([2.0]), tx.init(w), w)
    >>> # n = 1 + 2**2, z = 2 - (5**.5 - 1) * .5
    >>> state.accumulator, state.linear
    (Array([5.], dtype=float32), Array([1.381966], dtype=float32))
  """
  count: chex.Array  # int32 [], update steps taken (for schedules).
  accumulator: optax.Updates  # like params (slot dtype; float32 for float16
  # params), n = initial_accumulator_value + sum of g**2.
  linear: optax.Updates  # like params (slot dtype), z, the linear term.


def scale_by_ftrl(
    learning_rate: _numerics.ScalarOrSchedule = 1.0,
    learning_rate_power: float = -0.5,
    initial_accumulator_value: float = 0.1,
    l1_regularization_strength: float = 0.0,
    l2_regularization_strength: float = 0.0,
    l2_shrinkage_regularization_strength: float = 0.0,
    beta: float = 0.0,
    *,
    slot_dtype: Optional[Any] = None,
    weight_decay: Optional[float] = None,
    weight_decay_mask: Any = None,
    exclude_from_weight_decay: Optional[Sequence[str]] = None,
) -> optax.GradientTransformation:
  r"""Keras's Ftrl rule: the step from the parameters to the FTRL solution.

  With :math:`\eta` the learning rate, :math:`p = -`\ ``learning_rate_power``,
  :math:`\lambda_1, \lambda_2, \lambda_s` the L1, L2 and L2-shrinkage
  strengths and :math:`w` the parameters passed to ``update``:

  .. math::
    \tilde g &= g + 2 \lambda_s w \\
    n' &= n + g^2 \\
    z &\leftarrow z + \tilde g - \frac{n'^p - n^p}{\eta}\, w \\
    q &= \frac{n'^p}{\eta} + 2 \Big(\lambda_2 + \frac{\beta}{2 \eta}\Big) \\
    w' &= \big(\operatorname{clip}(z, -\lambda_1, \lambda_1) - z\big) / q,
    \quad n \leftarrow n', \quad \Delta = w - w'

  as Keras computes it: ``beta`` enters as ``l2 + beta / (2 * lr)`` with the
  current learning rate, the shrinkage acts on the linear term only (through
  :math:`\tilde g`; the accumulator sees the raw gradient), and :math:`n`
  starts at ``initial_accumulator_value``. ``update`` needs ``params``. The
  output :math:`\Delta` points up the gradient (``w - Δ`` is Keras's new
  weight; Keras assigns :math:`w'` where optax adds an update, so the new
  weight can differ from Keras's by half an ulp of the old one, which is
  large next to a :math:`w'` much smaller than :math:`w`). A coordinate
  that never had a gradient stays at
  :math:`z = 0`, so :math:`w' = 0`: finite whenever :math:`q > 0`, i.e.
  unless ``initial_accumulator_value``, the L2 strength and ``beta`` are all
  0 (then Keras's ``0 / 0`` is NaN, and so is this). Low-precision leaves
  are computed in float32 and cast back; for float16 leaves the accumulator,
  a sum of squares that soon exceeds float16's range, is kept in float32
  unless ``slot_dtype`` says otherwise.

  Args:
    learning_rate: number or schedule ``step -> lr`` (step = update count).
    learning_rate_power: how the per-coordinate rate falls with :math:`n`,
      <= 0 (0: a fixed rate).
    initial_accumulator_value: starting value of :math:`n`, >= 0.
    l1_regularization_strength: :math:`\lambda_1` >= 0.
    l2_regularization_strength: :math:`\lambda_2` >= 0.
    l2_shrinkage_regularization_strength: :math:`\lambda_s` >= 0, a
      magnitude penalty added to the gradient in the linear term.
    beta: the paper's :math:`\beta` >= 0.
    slot_dtype: dtype of the slots; default the parameter's dtype.
    weight_decay: Keras's decoupled decay, or None. With it, :math:`w` above
      is the decayed weight :math:`w - w \lambda \eta` that Keras's update
      step reads, and :math:`\Delta` is the step from it (chain
      :func:`descend_with_weight_decay` after this, as :func:`ftrl` does).
    weight_decay_mask: tree of booleans or callable; True means decay.
    exclude_from_weight_decay: name patterns that do not decay (see
      :func:`decay_mask`).

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = optax.chain(ox.scale_by_ftrl(learning_rate=1.0),
    ...                  optax.scale(-1.0))
    >>> w = jnp.array([1.0, -2.0])
    >>> updates, _ = tx.update(jnp.array([0.5, 0.0]), tx.init(w), w)
    >>> optax.apply_updates(w, updates)  # -z / (sqrt(n') / lr)
    Array([-0.3796767,  0.       ], dtype=float32)
  """
  _checks.check_learning_rate(learning_rate)
  _checks.check_non_positive("learning_rate_power", learning_rate_power)
  for name, value in (
      ("initial_accumulator_value", initial_accumulator_value),
      ("l1_regularization_strength", l1_regularization_strength),
      ("l2_regularization_strength", l2_regularization_strength),
      ("l2_shrinkage_regularization_strength",
       l2_shrinkage_regularization_strength),
      ("beta", beta)):
    _checks.check_non_negative(name, value)
  if weight_decay is not None:
    _checks.check_non_negative("weight_decay", weight_decay)

  def init_fn(params):
    def accumulator(p):
      # A float16 sum of squares leaves float16's range (65504) after a few
      # gradients of 100 (Keras's float16 Ftrl goes NaN): keep it in float32.
      dtype = slot_dtype or (jnp.float32 if _trees.is_trainable(p) and
                             p.dtype == jnp.float16 else None)
      zero = _trees.zeros_like(p, dtype)
      return None if zero is None else zero + jnp.asarray(
          initial_accumulator_value, zero.dtype)
    return ScaleByFtrlState(
        jnp.zeros([], jnp.int32),
        _trees.tree_map(accumulator, params),
        _trees.slots(params, slot_dtype),
    )

  def update_fn(updates, state, params=None):
    _trees.check_params(params, "Ftrl (it reads the weights)")
    lr_decay = _numerics.learning_rate_at(learning_rate, state.count)
    # Keras's lr is a variable; a constant one would let XLA turn `/ lr`
    # into `* (1 / lr)`, which rounds differently. The barrier keeps `/ lr`.
    lr = jax.lax.optimization_barrier(lr_decay)
    decays = _weight_decay.decay_flags(
        params, weight_decay, weight_decay_mask, exclude_from_weight_decay)
    power = jnp.asarray(-learning_rate_power, jnp.float32)
    # As Keras: l2 + beta / (2 lr), then 2 * that, in float32.
    l2_reg = jnp.asarray(l2_regularization_strength, jnp.float32) + (
        beta / (2.0 * lr))
    shrink = jnp.asarray(2 * l2_shrinkage_regularization_strength, jnp.float32)
    l1 = l1_regularization_strength

    def decayed(w, flag, dt):
      return _weight_decay.decayed_weight(
          w.astype(dt), flag, weight_decay, lr_decay.astype(dt))

    def leaf(n, g, z, w, flag):
      if n is None:
        return _numerics.zero_update(g), None, None
      dt = _numerics.compute_dtype(g.dtype)
      g32, n32, z32 = g.astype(dt), n.astype(dt), z.astype(dt)
      # The weight Keras's update step reads (decayed when decay is on) is
      # read twice: by the linear term and by the returned step. Formed once,
      # XLA writes it to a parameter-sized temporary every step; from two
      # outputs of one barrier it is formed inside each consumer instead.
      w_a, w_b = (w, w) if flag is False else (
          jax.lax.optimization_barrier((w, w)))
      w_lin, w_out = decayed(w_a, flag, dt), decayed(w_b, flag, dt)
      lr_ = lr.astype(dt)
      p = power.astype(dt)
      g_lin = g32 + shrink.astype(dt) * w_lin
      n_new = n32 + jnp.square(g32)
      n_new_p = jnp.power(n_new, p)
      z32 = z32 + (g_lin - ((n_new_p - jnp.power(n32, p)) / lr_) * w_lin)
      q = n_new_p / lr_ + 2 * l2_reg.astype(dt)
      w_new = (jnp.clip(z32, -l1, l1) - z32) / q
      return ((w_out - w_new).astype(g.dtype), n_new.astype(n.dtype),
              z32.astype(z.dtype))

    step, accumulator, linear = _trees.tree_map_n(
        leaf, 3, state.accumulator, updates, state.linear, params, decays)
    return step, ScaleByFtrlState(
        optax.safe_increment(state.count), accumulator, linear)

  return optax.GradientTransformation(init_fn, update_fn)
