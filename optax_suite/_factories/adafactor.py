"""The ``adafactor`` factory: Keras's signature over
:func:`~optax_suite.scale_by_adafactor`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from optax_suite import _base_options
from optax_suite import _numerics
from optax_suite import _optimizer
from optax_suite._options import weight_decay as _weight_decay
from optax_suite._rules import adafactor as _rule


@_base_options.with_base_doc
def adafactor(
    learning_rate: _numerics.ScalarOrSchedule = 0.001,
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
  options = _base_options.BaseOptions(
      learning_rate=learning_rate, weight_decay=weight_decay,
      clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm,
      use_ema=use_ema, ema_momentum=ema_momentum,
      ema_overwrite_frequency=ema_overwrite_frequency,
      loss_scale_factor=loss_scale_factor,
      gradient_accumulation_steps=gradient_accumulation_steps,
      exclude_from_weight_decay=exclude_from_weight_decay,
      weight_decay_mask=weight_decay_mask, lazy_rows=lazy_rows)
  own = dict(beta_2_decay=beta_2_decay, epsilon_1=epsilon_1,
             epsilon_2=epsilon_2, clip_threshold=clip_threshold,
             relative_step=relative_step)

  def rule(lr):
    return _weight_decay.with_decayed_params(
        _rule.scale_by_adafactor(lr, beta_2_decay, epsilon_1, epsilon_2,
                                 clip_threshold, relative_step),
        weight_decay, lr, weight_decay_mask=weight_decay_mask,
        exclude_from_weight_decay=exclude_from_weight_decay)

  return _optimizer.build(KERAS, rule, options, own, name=name)


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
    default_name="adafactor",
    class_name="Adafactor", factory=adafactor,
    own_keys=("beta_2_decay", "epsilon_1", "epsilon_2", "clip_threshold",
              "relative_step"),
    state_class=_rule.ScaleByAdafactorState,
    slot_groups=lambda keras_optimizer: [[("", "r"), ("", "c"),
                                          ("velocity", "v")]],
    import_slots=_import_slots,
    row_separable=False)
