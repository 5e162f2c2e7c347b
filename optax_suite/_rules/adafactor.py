"""Keras's Adafactor as an optax transformation (factored second moments)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import chex
import jax.numpy as jnp
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _trees


class ScaleByAdafactorState(NamedTuple):
  """State of :func:`scale_by_adafactor`.

  Leaves of rank >= 2 keep only the row and column statistics ``r`` and
  ``c`` (Keras also keeps a full-size ``v`` for them, rebuilt from ``r`` and
  ``c`` every step); leaves of rank 0 or 1 keep ``v``.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> tx = ox.scale_by_adafactor()
    >>> state = tx.init({'kernel': jnp.ones((4, 3)), 'bias': jnp.ones(3)})
    >>> state.r['kernel'].shape, state.c['kernel'].shape, state.v['kernel']
    ((4,), (3,), None)
    >>> state.r['bias'], state.v['bias'].shape
    (None, (3,))
  """
  count: chex.Array  # int32 [], update steps taken (Keras `iterations`).
  r: optax.Updates  # shape[:-1] for rank >= 2 leaves (slot dtype), else None.
  c: optax.Updates  # shape[:-2] + shape[-1:] for rank >= 2, else None.
  v: optax.Updates  # like params for rank 0 and 1 (slot dtype), else None.


def _factored(p: Any) -> bool:
  return _trees.is_trainable(p) and p.ndim >= 2


def _rms(x):
  return jnp.sqrt(jnp.mean(jnp.square(x)))


def scale_by_adafactor(
    learning_rate: _numerics.ScalarOrSchedule = 1.0,
    beta_2_decay: float = -0.8,
    epsilon_1: float = 1e-30,
    epsilon_2: float = 1e-3,
    clip_threshold: float = 1.0,
    relative_step: bool = True,
    *,
    slot_dtype: Optional[Any] = None,
) -> optax.GradientTransformation:
  r"""Keras's Adafactor rule, learning rate and parameter scale included.

  With :math:`t` the update step (from 1), :math:`\eta` the learning rate and
  :math:`w` the parameters passed to ``update``:

  .. math::
    \rho_t &= \min(\eta, 1 / \sqrt t), \quad
    \alpha_t = \max(\epsilon_2, \operatorname{rms}(w))\, \rho_t, \quad
    \hat\beta_t = 1 - t^{\text{beta\_2\_decay}} \\
    G &= g^2 + \epsilon_1 \\
    r &\leftarrow \hat\beta_t r + (1 - \hat\beta_t)\operatorname{mean}_{-1} G,
    \quad
    c \leftarrow \hat\beta_t c + (1 - \hat\beta_t)\operatorname{mean}_{-2} G,
    \quad v = \frac{r}{\operatorname{mean}_{-1} r} \otimes c
    \quad (\text{rank} \ge 2) \\
    v &\leftarrow \hat\beta_t v + (1 - \hat\beta_t) G
    \quad (\text{rank} < 2) \\
    u &= g / \sqrt v, \quad
    \Delta = \alpha_t\, u / \max(1, \operatorname{rms}(u) / d)

  with :math:`d` the ``clip_threshold``. As in Keras, every leaf of rank 2 or
  more is factored over its last two dimensions, whatever their sizes, and
  only ``r`` and ``c`` are kept for it (the full :math:`v` is a temporary of
  the step, as in Keras, which also stores it). ``relative_step`` is
  accepted as Keras accepts it: Keras caps a constant learning rate at
  :math:`1/\sqrt t` when it is set, and :math:`\rho_t` caps every learning
  rate there anyway, so it changes no number. ``update`` needs ``params``.
  The output points up the gradient. Low-precision leaves are computed in
  float32 and cast back.

  Args:
    learning_rate: number or schedule ``step -> lr`` (step = update count).
    beta_2_decay: exponent of the second-moment decay, <= 0.
    epsilon_1: added to the squared gradient, >= 0.
    epsilon_2: floor of the parameter scale, >= 0.
    clip_threshold: update clipping threshold :math:`d` > 0 (on the RMS of
      the normalized update; not Keras's ``clipnorm``).
    relative_step: Keras's flag (see above).
    slot_dtype: dtype of ``r``, ``c`` and ``v``; default the parameter's.

  Returns:
    An ``optax.GradientTransformation`` whose ``update`` needs ``params``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = optax.chain(ox.scale_by_adafactor(learning_rate=0.1),
    ...                  optax.scale(-1.0))
    >>> w = jnp.array([[1.0, -2.0], [0.5, 4.0]])
    >>> updates, _ = tx.update(jnp.array([[0.5, 0.0], [1.0, -1.0]]),
    ...                        tx.init(w), w)
    >>> optax.apply_updates(w, updates)  # alpha = rms(w) * 0.1
    Array([[ 0.69076705, -2.        ],
           [ 0.2813393 ,  4.24447   ]], dtype=float32)
  """
  _checks.check_flag("relative_step", relative_step)
  _checks.check_learning_rate(learning_rate)
  _checks.check_non_positive("beta_2_decay", beta_2_decay)
  _checks.check_non_negative("epsilon_1", epsilon_1)
  _checks.check_non_negative("epsilon_2", epsilon_2)
  _checks.check_positive("clip_threshold", clip_threshold)
  del relative_step  # rho_t already caps the learning rate (see above).

  def init_fn(params):
    def r_slot(p):
      if not _factored(p):
        return None
      return _trees.zeros_like(p, slot_dtype).sum(axis=-1)

    def c_slot(p):
      if not _factored(p):
        return None
      return _trees.zeros_like(p, slot_dtype).sum(axis=-2)

    def v_slot(p):
      return None if _factored(p) else _trees.zeros_like(p, slot_dtype)

    return ScaleByAdafactorState(
        jnp.zeros([], jnp.int32), _trees.tree_map(r_slot, params),
        _trees.tree_map(c_slot, params), _trees.tree_map(v_slot, params))

  def update_fn(updates, state, params=None):
    _trees.check_params(params, "Adafactor (it reads the weights)")
    lr = _numerics.learning_rate_at(learning_rate, state.count)
    t = (state.count + 1).astype(jnp.float32)
    rho_t = jnp.minimum(lr, 1 / jnp.sqrt(t))
    beta_2_t = 1 - jnp.power(t, jnp.asarray(beta_2_decay, jnp.float32))

    def leaf(g, w, r, c, v):
      if not _trees.is_trainable(g) or not _trees.is_trainable(w):
        return _numerics.zero_update(g), None, None, None
      dt = _numerics.compute_dtype(g.dtype)
      g32, b, keep = g.astype(dt), beta_2_t.astype(dt), 1 - beta_2_t.astype(dt)
      alpha_t = jnp.maximum(jnp.asarray(epsilon_2, dt), _rms(w.astype(dt))) * (
          rho_t.astype(dt))
      grad_sq = jnp.square(g32) + epsilon_1
      if r is not None:
        r32 = b * r.astype(dt) + keep * jnp.mean(grad_sq, axis=-1)
        c32 = b * c.astype(dt) + keep * jnp.mean(grad_sq, axis=-2)
        v32 = jnp.expand_dims(r32 / jnp.mean(r32, axis=-1, keepdims=True),
                              -1) * jnp.expand_dims(c32, -2)
        r, c = r32.astype(r.dtype), c32.astype(c.dtype)
      else:
        v32 = b * v.astype(dt) + keep * grad_sq
        v = v32.astype(v.dtype)
      u = g32 / jnp.sqrt(v32)
      u = u / jnp.maximum(jnp.ones([], dt), _rms(u) / clip_threshold)
      return (alpha_t * u).astype(g.dtype), r, c, v

    step, r, c, v = _trees.tree_map_n(
        leaf, 4, updates, params, state.r, state.c, state.v)
    return step, ScaleByAdafactorState(
        optax.safe_increment(state.count), r, c, v)

  return optax.GradientTransformation(init_fn, update_fn)
