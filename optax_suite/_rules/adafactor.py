"""Keras's Adafactor as an optax transformation (factored second moments)."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import chex
import jax.numpy as jnp
import numpy as np
import optax

from optax_suite import _common
from optax_suite import _optimizer
from optax_suite._options import weight_decay as _weight_decay


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
  return _common.is_trainable(p) and p.ndim >= 2


def _rms(x):
  return jnp.sqrt(jnp.mean(jnp.square(x)))


def scale_by_adafactor(
    learning_rate: _common.ScalarOrSchedule = 1.0,
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
  _common.check_flag("relative_step", relative_step)
  _common.check_learning_rate(learning_rate)
  _common.check_non_positive("beta_2_decay", beta_2_decay)
  _common.check_non_negative("epsilon_1", epsilon_1)
  _common.check_non_negative("epsilon_2", epsilon_2)
  _common.check_positive("clip_threshold", clip_threshold)
  del relative_step  # rho_t already caps the learning rate (see above).

  def init_fn(params):
    def r_slot(p):
      if not _factored(p):
        return None
      return _common.zeros_like(p, slot_dtype).sum(axis=-1)

    def c_slot(p):
      if not _factored(p):
        return None
      return _common.zeros_like(p, slot_dtype).sum(axis=-2)

    def v_slot(p):
      return None if _factored(p) else _common.zeros_like(p, slot_dtype)

    return ScaleByAdafactorState(
        jnp.zeros([], jnp.int32), _common.tree_map(r_slot, params),
        _common.tree_map(c_slot, params), _common.tree_map(v_slot, params))

  def update_fn(updates, state, params=None):
    _common.check_params(params, "Adafactor (it reads the weights)")
    lr = _common.learning_rate_at(learning_rate, state.count)
    t = (state.count + 1).astype(jnp.float32)
    rho_t = jnp.minimum(lr, 1 / jnp.sqrt(t))
    beta_2_t = 1 - jnp.power(t, jnp.asarray(beta_2_decay, jnp.float32))

    def leaf(g, w, r, c, v):
      if not _common.is_trainable(g) or not _common.is_trainable(w):
        return _common.zero_update(g), None, None, None
      dt = _common.compute_dtype(g.dtype)
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

    step, r, c, v = _common.tree_map_n(
        leaf, 4, updates, params, state.r, state.c, state.v)
    return step, ScaleByAdafactorState(
        optax.safe_increment(state.count), r, c, v)

  return optax.GradientTransformation(init_fn, update_fn)


@_optimizer.with_base_doc
def adafactor(
    learning_rate: _common.ScalarOrSchedule = 0.001,
    beta_2_decay: float = -0.8,
    epsilon_1: float = 1e-30,
    epsilon_2: float = 1e-3,
    clip_threshold: float = 1.0,
    relative_step: bool = True,
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
  """Keras 3's ``Adafactor``: the update rule of :func:`scale_by_adafactor`.

  Keras's numbers with less memory: a leaf of rank 2 or more keeps its row
  and column statistics only, not Keras's extra full-size ``v``. The rule
  reads the weights after Keras's decoupled weight decay (their RMS scales
  the step), as Keras's ``update_step`` does, so ``update`` always needs
  ``params``.

  Args:
    learning_rate: the learning rate (see below); the step uses
      ``min(lr, 1 / sqrt(t))`` times the parameters' RMS.
    beta_2_decay: exponent of the second-moment decay ``1 - t**beta_2_decay``.
    epsilon_1: added to the squared gradient.
    epsilon_2: floor of the parameters' RMS.
    clip_threshold: Adafactor's clipping of the normalized update.
    relative_step: Keras's flag; it changes no number in Keras 3.15 (see
      :func:`scale_by_adafactor`).
  {base}
  Returns:
    A :class:`KerasOptimizer` (an ``optax.GradientTransformationExtraArgs``).

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.adafactor(learning_rate=0.1)
    >>> params = {'w': jnp.array([[1.0, -2.0], [0.5, 4.0]])}
    >>> state = opt.init(params)
    >>> updates, state = jax.jit(opt.update)(
    ...     {'w': jnp.array([[0.5, 0.0], [1.0, -1.0]])}, state, params)
    >>> optax.apply_updates(params, updates)['w']
    Array([[ 0.69076705, -2.        ],
           [ 0.28133932,  4.24447   ]], dtype=float32)
  """
  arguments = dict(locals())

  def rule(lr):
    return _weight_decay.with_decayed_params(
        scale_by_adafactor(lr, beta_2_decay, epsilon_1, epsilon_2,
                           clip_threshold, relative_step),
        weight_decay, lr, weight_decay_mask=weight_decay_mask,
        exclude_from_weight_decay=exclude_from_weight_decay)

  return _optimizer.build(KERAS, "adafactor", rule, arguments)


def _import_slots(slots: dict) -> dict:
  """Keras's r, c, v per variable -> this state's (r, c factored; v not).

  Keras keeps, for every variable, ``r``, ``c`` (int32 scalar placeholders
  below rank 2) and a full-size ``v``. A variable is factored when its ``v``
  has rank >= 2; its ``v`` is then ignored (Keras rebuilds it from ``r`` and
  ``c`` before using it).
  """
  factored = [np.ndim(v) >= 2 for v in slots["v"]]
  keep = lambda values, want: [x for x, f in zip(values, factored)
                               if f == want]
  return {"r": keep(slots["r"], True), "c": keep(slots["c"], True),
          "v": keep(slots["v"], False)}


KERAS = _optimizer.KerasSpec(
    class_name="Adafactor", factory=adafactor,
    own_keys=("beta_2_decay", "epsilon_1", "epsilon_2", "clip_threshold",
              "relative_step"),
    state_class=ScaleByAdafactorState,
    slot_groups=lambda keras_optimizer: [[("", "r"), ("", "c"),
                                          ("velocity", "v")]],
    import_slots=_import_slots,
    row_separable=False)
