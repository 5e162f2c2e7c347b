"""The ``muon`` factory: Keras's signature over
:func:`~optax_suite.scale_by_muon`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from optax_suite import _base_options
from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _optimizer
from optax_suite._rules import muon as _rule


@_base_options.with_base_doc
def muon(
    learning_rate: _numerics.ScalarOrSchedule = 0.001,
    adam_beta_1: float = 0.9,
    adam_beta_2: float = 0.999,
    adam_weight_decay: Optional[float] = 0.004,
    epsilon: float = 1e-7,
    weight_decay: Optional[float] = 0.004,
    clipnorm: Optional[float] = None,
    clipvalue: Optional[float] = None,
    global_clipnorm: Optional[float] = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: Optional[int] = None,
    loss_scale_factor: Optional[float] = None,
    gradient_accumulation_steps: Optional[int] = None,
    name: Optional[str] = None,
    exclude_layers: Optional[Sequence[str]] = None,
    exclude_embeddings: bool = True,
    muon_a: float = 3.4445,
    muon_b: float = -4.7750,
    muon_c: float = 2.0315,
    adam_lr_ratio: float = 1,
    momentum: float = 0.95,
    ns_steps: int = 5,
    nesterov: bool = True,
    rms_rate: Optional[float] = 0.2,
    *,
    exclude_from_weight_decay: Optional[Sequence[str]] = None,
    weight_decay_mask: Any = None,
    lazy_rows: bool = False,
) -> _optimizer.KerasOptimizer:
  """Keras 3's ``Muon``: the update rule of :func:`scale_by_muon`.

  A leaf's path is its key path joined with ``"/"`` as Keras joins layer
  paths (``"encoder/dense/kernel"``); it stands for Keras's
  ``variable.path`` in ``exclude_layers`` and ``exclude_embeddings``.
  Rank-2 leaves not excluded are orthogonalized (Newton-Schulz); the others
  take the Adam branch. Weight decay follows Keras's ``Muon``:
  ``weight_decay`` on the Newton-Schulz leaves and ``adam_weight_decay`` on
  the Adam leaves, each with the full learning rate, each skipped when None,
  both subject to ``exclude_from_weight_decay`` / ``weight_decay_mask``.

  Args:
    learning_rate: the learning rate (see below).
    adam_beta_1: Adam branch's first-moment decay, in [0, 1).
    adam_beta_2: Adam branch's second-moment decay, in [0, 1).
    adam_weight_decay: decoupled decay of the Adam-branch leaves, or None.
    epsilon: Adam branch's epsilon hat.
    exclude_layers: regular expressions searched in each leaf's path; a
      match takes the Adam branch.
    exclude_embeddings: leaves with "embedding" in their (lower-cased) path
      take the Adam branch.
    muon_a: Newton-Schulz coefficient ``a``.
    muon_b: Newton-Schulz coefficient ``b``.
    muon_c: Newton-Schulz coefficient ``c``.
    adam_lr_ratio: the Adam branch's learning rate over ``learning_rate``.
    momentum: the Muon branch's momentum, in [0, 1).
    ns_steps: number of Newton-Schulz iterations.
    nesterov: Nesterov momentum in the Muon branch.
    rms_rate: Moonlight's scale ``sqrt(max(rows, cols)) * rms_rate`` of the
      Muon step, or None for none.
  {base}
  Here ``weight_decay`` applies to the Newton-Schulz leaves only (above).

  Returns:
    A :class:`KerasOptimizer` (an ``optax.GradientTransformationExtraArgs``).

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.muon(learning_rate=0.1, weight_decay=None,
    ...               adam_weight_decay=None, rms_rate=None)
    >>> params = {'w': jnp.eye(2), 'b': jnp.ones(2)}
    >>> grads = {'w': jnp.array([[1.0, 0.0], [0.0, 2.0]]),
    ...          'b': jnp.array([1.0, -1.0])}
    >>> updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
    >>> optax.apply_updates(params, updates)['b']
    Array([0.900001, 1.099999], dtype=float32)
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
  if adam_weight_decay is not None:
    _checks.check_non_negative("adam_weight_decay", adam_weight_decay)
  # Keras keeps `exclude_layers or []`, and writes [] in its config.
  own = dict(adam_beta_1=adam_beta_1, adam_beta_2=adam_beta_2,
             adam_weight_decay=adam_weight_decay, epsilon=epsilon,
             exclude_layers=list(exclude_layers or []),
             exclude_embeddings=exclude_embeddings, muon_a=muon_a,
             muon_b=muon_b, muon_c=muon_c, adam_lr_ratio=adam_lr_ratio,
             momentum=momentum, ns_steps=ns_steps, nesterov=nesterov,
             rms_rate=rms_rate)
  route_args = (exclude_layers, exclude_embeddings)

  def rule(lr):
    return _rule.with_muon_decay(
        _rule.scale_by_muon(
            lr, adam_beta_1, adam_beta_2, epsilon, exclude_layers,
            exclude_embeddings, muon_a, muon_b, muon_c, adam_lr_ratio,
            momentum, ns_steps, nesterov, rms_rate),
        lr, weight_decay, adam_weight_decay, route_args, weight_decay_mask,
        exclude_from_weight_decay)

  # The decay is the rule's (two rates by branch), so the base chain gets
  # none; the config keeps every argument as given.
  decays = weight_decay is not None or adam_weight_decay is not None
  return _optimizer.build(
      KERAS, rule, options, own, name=name, decay_in_rule=True,
      params_needed_for=("weight decay",) if decays else ())


def _keras_slots(keras_optimizer):
  # Keras adds, variable by variable, a "momentum" and, on Adam-branch
  # variables only, a "velocity": `nu` is None on the others.
  del keras_optimizer
  return [[("momentum", "mu"), ("velocity", "nu")]]


KERAS = _optimizer.KerasSpec(
    default_name="muon",
    class_name="Muon", factory=muon,
    own_keys=("adam_beta_1", "adam_beta_2", "epsilon", "exclude_layers",
              "muon_a", "muon_b", "muon_c", "adam_lr_ratio", "momentum",
              "ns_steps", "nesterov", "exclude_embeddings",
              "adam_weight_decay", "rms_rate"),
    state_class=_rule.ScaleByMuonState, slot_groups=_keras_slots,
    partial_slots=("nu",),
    row_separable=False)
