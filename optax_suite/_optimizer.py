"""How the package's optimizers are put together from its transformations.

A Keras optimizer step is, in order: unscale the gradients by the static
loss-scale factor, accumulate them, clip them, decay the weights, apply the
optimizer's own rule, and keep the parameter EMA. :func:`keras_optimizer`
chains the package's transformations in exactly that order; the factories
(:func:`optax_suite.adam` and friends) only add their own rule.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import chex
import jax
import jax.numpy as jnp
import optax

from optax_suite import _common
from optax_suite._options import accumulation as _accumulation
from optax_suite._options import apply as _apply
from optax_suite._options import clipping as _clipping
from optax_suite._options import ema as _ema
from optax_suite._options import sparse as _sparse
from optax_suite._options import weight_decay as _weight_decay


class KerasOptimizerState(NamedTuple):
  """State of every optimizer built by :func:`keras_optimizer`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> state = ox.adam(loss_scale_factor=8.0).init(jnp.zeros(2))
    >>> state.count, state.loss_scale_factor, state.ema
    (Array(0, dtype=int32), Array(8., dtype=float32), EmptyState())
  """
  count: chex.Array  # int32 [], calls so far (Keras `_iterations`).
  # float32 [], copy of the static loss scale for `scale_loss` (1.0 if None,
  # 0.0 once `loss_scale_optimizer` switched it off); `update` divides by
  # the optimizer's own value, not by this copy.
  loss_scale_factor: chex.Array
  inner: optax.OptState  # chain state, wrapped in AccumulationState if k > 1.
  ema: Union[_ema.EmaState, optax.EmptyState]  # EMA of the params, if used.


class KerasOptimizer(optax.GradientTransformationExtraArgs):
  """An optax ``(init, update)`` pair that also knows how it was built.

  It is the ``GradientTransformationExtraArgs`` optax expects, with its
  other fields declared and given once, at construction; none can be set
  afterwards. ``factory(**config)`` builds the same optimizer again.

  Attributes:
    config: the arguments it was built with (see
      :func:`optax_suite.get_config`).
    factory: the function that built it (``ox.adam``, ``ox.muon``,
      ``ox.loss_scale_optimizer``, ...).
    fused_step: ``(grads, state, params) -> (params, state)``, the step
      :func:`optax_suite.apply` runs: the numbers of ``update`` then
      :func:`optax_suite.apply_updates`, without the parameter work on a
      gradient-accumulation micro-step.
    assign: for :func:`optax_suite.multi_optimizer`, ``tree -> (labels,
      {label: optimizer})``; None otherwise.

  Example:
    >>> import optax, optax_suite as ox
    >>> opt = ox.adamax(learning_rate=0.01, use_ema=True)
    >>> isinstance(opt, optax.GradientTransformationExtraArgs)
    True
    >>> opt.config['learning_rate'], opt.config['name']
    (0.01, 'adamax')
    >>> opt.factory is ox.adamax
    True
  """
  config: dict
  factory: Callable[..., Any]
  fused_step: Callable[..., tuple]
  assign: Optional[Callable[[Any], tuple]]

  def __new__(cls, init: Callable[..., Any], update: Callable[..., Any], *,
              config: dict, factory: Callable[..., Any],
              fused_step: Callable[..., tuple],
              assign: Optional[Callable[[Any], tuple]] = None):
    self = super().__new__(cls, init, update)
    for field, value in (("config", dict(config)), ("factory", factory),
                         ("fused_step", fused_step), ("assign", assign)):
      object.__setattr__(self, field, value)
    return self

  def __setattr__(self, name: str, value: Any) -> None:
    raise AttributeError(
        f"A KerasOptimizer's fields are set at construction; cannot set "
        f"{name!r}.")

  def __getnewargs_ex__(self):  # copy and pickle keep every field.
    return ((self.init, self.update), dict(
        config=self.config, factory=self.factory,
        fused_step=self.fused_step, assign=self.assign))


def split_step(tx: optax.GradientTransformation) -> Callable[..., tuple]:
  """``(grads, state, params) -> (params, state)``: ``update`` then
  :func:`~optax_suite.apply_updates`, the step of any transformation."""
  def step(grads, state, params):
    updates, state = tx.update(grads, state, params)
    return _apply.apply_updates(params, updates, state), state
  return step


def step_of(tx: optax.GradientTransformation) -> Callable[..., tuple]:
  """The fused step of a :class:`KerasOptimizer`, else :func:`split_step`."""
  if isinstance(tx, KerasOptimizer):
    return tx.fused_step
  return split_step(tx)


def as_step_transform(
    tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """``tx`` whose ``update`` returns the new parameters, not the updates.

  For a wrapper that passes its inner transformation's updates through
  (``optax.partition``, ``optax.inject_hyperparams``): given this in place
  of ``tx``, the wrapper's ``update`` runs ``tx``'s fused step and returns
  the new parameters, in its own state structure.
  """
  step = step_of(tx)
  return optax.GradientTransformationExtraArgs(
      tx.init, lambda grads, state, params=None, **extra: step(
          grads, state, params))


def check_base_arguments(
    *, learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm,
    ema_momentum, ema_overwrite_frequency, loss_scale_factor,
    gradient_accumulation_steps, exclude_from_weight_decay, weight_decay_mask,
    lazy_rows=False,
) -> None:
  """Construction-time checks of Keras's base optimizer arguments."""
  _common.check_learning_rate(learning_rate)
  for name, value in (("weight_decay", weight_decay), ("clipnorm", clipnorm),
                      ("clipvalue", clipvalue),
                      ("global_clipnorm", global_clipnorm)):
    if value is not None:
      _common.check_non_negative(name, value)
  if sum(v is not None for v in (clipnorm, clipvalue, global_clipnorm)) > 1:
    raise ValueError(
        "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be "
        f"set. Received: clipnorm={clipnorm}, clipvalue={clipvalue}, "
        f"global_clipnorm={global_clipnorm}")
  _common.check_unit_interval("ema_momentum", ema_momentum, closed_right=True)
  if ema_overwrite_frequency is not None:
    _common.check_int_at_least(
        "ema_overwrite_frequency", ema_overwrite_frequency, 1)
  if gradient_accumulation_steps is not None:
    _common.check_int_at_least(
        "gradient_accumulation_steps", gradient_accumulation_steps, 2)
  if loss_scale_factor is not None:
    _common.check_non_negative("loss_scale_factor", loss_scale_factor)
    if _common.is_concrete(loss_scale_factor) and float(loss_scale_factor) == 0:
      raise ValueError(
          "`loss_scale_factor` must be > 0 or None. "
          f"Received: loss_scale_factor={loss_scale_factor!r}")
  if exclude_from_weight_decay is not None and (
      isinstance(exclude_from_weight_decay, str)
      or not all(isinstance(s, str) for s in exclude_from_weight_decay)):
    raise ValueError(
        "`exclude_from_weight_decay` must be a list of strings or None. "
        f"Received: exclude_from_weight_decay={exclude_from_weight_decay!r}")
  _weight_decay.check_exclusions(exclude_from_weight_decay)  # RE2 patterns.
  del weight_decay_mask  # Any tree of booleans or callable is accepted.
  if not isinstance(lazy_rows, bool):
    raise ValueError(
        f"`lazy_rows` must be True or False. Received: lazy_rows={lazy_rows!r}")


def _clip(clipnorm, clipvalue, global_clipnorm) -> optax.GradientTransformation:
  if clipnorm is not None:
    return _clipping.clip_by_norm(clipnorm)
  if global_clipnorm is not None:
    return _clipping.clip_by_global_norm(global_clipnorm)
  if clipvalue is not None:
    return _clipping.clip_by_value(clipvalue)
  return optax.identity()


def keras_optimizer(
    scale_by_rule: Callable[[Any], optax.GradientTransformation],
    *,
    learning_rate: _common.ScalarOrSchedule = 0.001,
    weight_decay: Optional[float] = None,
    clipnorm: Optional[float] = None,
    clipvalue: Optional[float] = None,
    global_clipnorm: Optional[float] = None,
    use_ema: bool = False,
    ema_momentum: float = 0.99,
    ema_overwrite_frequency: Optional[int] = None,
    loss_scale_factor: Optional[float] = None,
    gradient_accumulation_steps: Optional[int] = None,
    exclude_from_weight_decay: Optional[Sequence[str]] = None,
    weight_decay_mask: Any = None,
    lazy_rows: bool = False,
) -> KerasOptimizer:
  r"""Chains a Keras update rule with Keras's base optimizer options.

  One call of ``update`` does what one ``keras.Optimizer.apply`` does:

  .. math::
    g \leftarrow g / s \;\to\; \text{accumulate} \;\to\; \text{clip}
    \;\to\; u = -(\text{rule}_{\eta_t}(g) + w \lambda \eta_t)
    \;\to\; \text{EMA}

  where :math:`\eta_t` is the learning rate at call ``t`` (schedules count
  every call) and the rule's bias correction counts update steps. The
  learning rate is resolved once per call and handed to the rule, to the
  weight decay and nowhere else.

  Args:
    scale_by_rule: ``lr -> GradientTransformation`` giving the rule's step
      (pointing up the gradient), e.g. ``lambda lr: scale_by_adam(lr)``.
    learning_rate: number, schedule ``step -> lr`` or zero-argument callable.
    weight_decay: Keras's decoupled weight decay, or None.
    clipnorm: per-leaf norm bound, or None.
    clipvalue: element-wise bound, or None.
    global_clipnorm: global norm bound, or None.
    use_ema: keep a moving average of the parameters.
    ema_momentum: its momentum.
    ema_overwrite_frequency: overwrite the parameters every so many steps.
    loss_scale_factor: static loss scale to divide the gradients by.
    gradient_accumulation_steps: update every so many calls, or None.
    exclude_from_weight_decay: regular expressions searched in each leaf's
      own name (``"path:"``-prefixed: in its path); see
      :func:`~optax_suite.decay_mask`.
    weight_decay_mask: tree of booleans or callable; True means decay.
    lazy_rows: update only the touched rows for row-sparse (``BCOO``)
      gradients, as tf.keras's sparse path does (see ``BASE_DOC``).

  Returns:
    A :class:`KerasOptimizer` (an ``optax.GradientTransformationExtraArgs``)
    whose ``update`` takes ``(grads, state, params, **extra_args)``;
    ``extra_args`` (e.g. a ``value`` for a line search) go to the rule if it
    accepts them. It also carries the fused step that
    :func:`optax_suite.apply` uses.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> opt = ox.keras_optimizer(lambda lr: ox.scale_by_adamax(lr),
    ...                          learning_rate=0.1, clipvalue=0.5)
    >>> params = jnp.array([1.0])
    >>> updates, _ = opt.update(jnp.array([3.0]), opt.init(params), params)
    >>> updates  # the gradient clipped to 0.5, then one Adamax step of lr
    Array([-0.09999996], dtype=float32)
  """
  base = dict(
      learning_rate=learning_rate, weight_decay=weight_decay,
      clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm,
      use_ema=use_ema, ema_momentum=ema_momentum,
      ema_overwrite_frequency=ema_overwrite_frequency,
      loss_scale_factor=loss_scale_factor,
      gradient_accumulation_steps=gradient_accumulation_steps,
      exclude_from_weight_decay=exclude_from_weight_decay,
      weight_decay_mask=weight_decay_mask, lazy_rows=lazy_rows)
  init_fn, update_fn, fused_step = _assemble(scale_by_rule, **base)
  return KerasOptimizer(
      init_fn, update_fn, config=dict(base, scale_by_rule=scale_by_rule),
      factory=keras_optimizer, fused_step=fused_step)


def _assemble(
    scale_by_rule, *, learning_rate, weight_decay, clipnorm, clipvalue,
    global_clipnorm, use_ema, ema_momentum, ema_overwrite_frequency,
    loss_scale_factor, gradient_accumulation_steps, exclude_from_weight_decay,
    weight_decay_mask, lazy_rows, params_needed_for=(),
) -> tuple:
  """``(init, update, fused_step)`` of :func:`keras_optimizer`.

  ``params_needed_for`` names what else (a rule's own weight decay) makes
  ``update`` refuse ``params=None``, checked first.
  """
  check_base_arguments(
      learning_rate=learning_rate, weight_decay=weight_decay,
      clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm,
      ema_momentum=ema_momentum,
      ema_overwrite_frequency=ema_overwrite_frequency,
      loss_scale_factor=loss_scale_factor,
      gradient_accumulation_steps=gradient_accumulation_steps,
      exclude_from_weight_decay=exclude_from_weight_decay,
      weight_decay_mask=weight_decay_mask, lazy_rows=lazy_rows)
  _common.check_flag("use_ema", use_ema)
  clip = _clip(clipnorm, clipvalue, global_clipnorm)
  scale_by_rule(0.0)  # Runs the rule's own argument checks now.

  def chain_transform(lr) -> optax.GradientTransformation:
    parts = [clip, scale_by_rule(lr), _weight_decay.descend_with_weight_decay(
        weight_decay, lr, weight_decay_mask=weight_decay_mask,
        exclude_from_weight_decay=exclude_from_weight_decay)]
    tx = optax.chain(*parts)
    return _sparse.lazy_rows(tx) if lazy_rows else tx

  def step_transform(lr) -> optax.GradientTransformation:
    tx = chain_transform(lr)
    if gradient_accumulation_steps is not None:
      accumulate = (_sparse.accumulate_rows if lazy_rows
                    else _accumulation.accumulate_gradients)
      tx = accumulate(tx, gradient_accumulation_steps)
    return tx

  average = _ema.ema(
      ema_momentum, ema_overwrite_frequency,
      gradient_accumulation_steps=gradient_accumulation_steps,
  ) if use_ema else None
  if use_ema and lazy_rows:
    average = _sparse.lazy_rows(average)
  needs_params = list(params_needed_for) + [
      n for n, on in (("weight decay", weight_decay is not None),
                      ("EMA (`use_ema=True`)", use_ema)) if on]

  def static_scale():
    return jnp.asarray(
        1.0 if loss_scale_factor is None else loss_scale_factor, jnp.float32)

  def init_fn(params):
    _common.check_not_complex(params)  # Whatever the rule: never skip silently.
    return KerasOptimizerState(
        count=jnp.zeros([], jnp.int32),
        loss_scale_factor=static_scale(),
        inner=step_transform(jnp.zeros([], jnp.float32)).init(params),
        ema=average.init(params) if use_ema else optax.EmptyState(),
    )

  def prepare(updates, state, params):
    """Checks, the dense sum of BCOO leaves (default), the static unscale.

    Returns the gradients to step with, this call's learning rate, and the
    static scale the new state keeps.
    """
    for needed_for in needs_params:
      _common.check_params(params, needed_for)
    _common.check_same_structure(updates, params)
    if _sparse.has_row_sparse(updates):
      _sparse.check_row_sparse(updates, params)
      if not lazy_rows:  # Keras 3 treats a sparse gradient as the dense one.
        updates = _sparse.densify(updates)
    # The factor is the optimizer's own (the constructor's, or an injected
    # hyperparameter's current value), as Keras reads its attribute at each
    # apply; the state's copy only tells that `loss_scale_optimizer` turned
    # it off (0), and is refreshed for `scale_loss`.
    off = state.loss_scale_factor == 0
    scale = jnp.where(off, 0.0, static_scale())
    if loss_scale_factor is not None:
      divisor = jnp.where(off, 1.0, scale)
      updates = jax.tree.map(
          lambda g: g / divisor.astype(g.dtype)
          if _common.is_trainable(g) else g, updates)
    return updates, _common.learning_rate_at(learning_rate, state.count), scale

  def update_fn(updates, state, params=None, **extra_args):
    updates, lr, scale = prepare(updates, state, params)
    # `optax.chain` hands `extra_args` to the parts that take them (a rule
    # built with `optax.GradientTransformationExtraArgs`) and not the others.
    updates, inner = step_transform(lr).update(
        updates, state.inner, params, **extra_args)
    ema_state = state.ema
    if use_ema:
      updates, ema_state = average.update(updates, state.ema, params)
    return updates, KerasOptimizerState(
        optax.safe_increment(state.count), scale, inner, ema_state)

  # With lazy rows a micro-step's update is already row-sparse (-0.0 rows).
  if gradient_accumulation_steps is None or lazy_rows:
    fused_step = split_step(optax.GradientTransformation(init_fn, update_fn))
  else:
    fused_step = _fused_step(prepare, chain_transform,
                             gradient_accumulation_steps, average,
                             ema_overwrite_frequency)
  return init_fn, update_fn, fused_step


def _fused_step(prepare, chain_transform, k, average, overwrite_frequency):
  """The fused step with dense accumulation: see ``optax_suite.apply``.

  One ``cond`` holds the update work (mean gradient, clip, rule, decay, new
  parameters); its micro-step branch returns the parameter and slot buffers
  as they are. The accumulator and the EMA are written after it, in place:
  the EMA advances on every call from the parameters the ``cond`` returned
  (on a micro-step, the unchanged ones: ``p + -0.0`` is ``p``), and an
  overwrite is a second ``cond`` that writes the average into the
  parameters only on the calls it falls on. Every number is computed as in
  ``update`` + ``apply_updates``. (With the EMA inside the ``cond``, XLA
  copied every average after it, on every call.)
  """
  def step(grads, state, params):
    grads, lr, scale = prepare(grads, state, params)
    acc_state = state.inner
    is_update = (acc_state.count + 1) % k == 0

    def update_branch(operands):
      grads, acc, chain_state, params = operands
      updates, chain_state = chain_transform(lr).update(
          _accumulation.mean_gradient(acc, grads, k), chain_state, params)
      return (_apply.apply_updates(params, updates), chain_state,
              jnp.ones([], jnp.bool_))

    def micro_branch(operands):  # First (false): XLA aliases what it passes.
      _, _, chain_state, params = operands
      return params, chain_state, jnp.zeros([], jnp.bool_)

    params, chain_state, reset = jax.lax.cond(
        is_update, update_branch, micro_branch,
        (grads, acc_state.accumulated, acc_state.inner_state, params))

    ema_state = state.ema
    if average is not None:
      zeros = _common.tree_map(_common.identity_update, params)
      _, ema_state = average.update(zeros, ema_state, params)
      if overwrite_frequency is not None:  # The overwrite lands exactly.
        params = jax.lax.cond(
            ema_state.overwritten,
            lambda ops: _ema.land_on_overwritten_averages(*ops),
            lambda ops: ops[1], (params, params, ema_state))

    acc = _accumulation.next_accumulator(acc_state.accumulated, grads, reset)
    inner = acc_state._replace(count=optax.safe_increment(acc_state.count),
                               accumulated=acc, inner_state=chain_state)
    return params, state._replace(
        count=optax.safe_increment(state.count), loss_scale_factor=scale,
        inner=inner, ema=ema_state)

  return step


# ----------------------------------------------------------------------------
# What every factory shares: its base arguments, their docs, and how it is
# registered for configs and Keras state import.

BASE_DOC = """
  Base arguments (Keras's, same names and defaults):
    weight_decay: decoupled decay ``w -= w * weight_decay * lr`` before the
      update, or None.
    clipnorm: clip each gradient leaf to this L2 norm, or None.
    clipvalue: clip each gradient element to ``[-clipvalue, clipvalue]``.
    global_clipnorm: clip all gradients to this global norm; a non-finite
      norm makes every gradient NaN, as in Keras. At most one of the three.
    use_ema: keep an exponential moving average of the parameters.
    ema_momentum: momentum of that average, in [0, 1].
    ema_overwrite_frequency: overwrite the parameters with the average every
      this many update steps, or None.
    loss_scale_factor: static loss scale; gradients are divided by it. The
      value divided by is this argument (or, injected, its current value in
      ``state.hyperparams``) at every ``update``, as Keras reads its
      attribute at every ``apply``; a restored checkpoint does not override
      it. The state keeps a copy for :func:`scale_loss`, refreshed by each
      ``update``.
    gradient_accumulation_steps: update every this many calls with the mean
      gradient (an integer >= 2), or None.
    name: kept in the config; it has no effect on the numbers.
    exclude_from_weight_decay: keyword-only; regular expressions, each
      searched (``re.search``) in a leaf's own name, the last key of its
      path, as Keras searches ``variable.name``: ``["^bias$"]`` excludes
      every leaf named ``bias``. A pattern prefixed ``"path:"`` is searched
      in the whole path instead, keys joined with ``"/"`` as in Keras's
      ``variable.path`` (``"path:^encoder/"`` excludes a sub-module).
    weight_decay_mask: keyword-only; tree of booleans or callable
      ``params -> tree``, True means decay.
    lazy_rows: keyword-only; tf.keras's sparse updates for row-sparse
      gradients (below).

  A gradient leaf may be a row-sparse ``jax.experimental.sparse.BCOO``
  (``n_batch=0, n_dense=1``: indices ``[nnz, 1]``, data ``[nnz, dim]``; rows
  may repeat and are summed). By default it gives Keras 3's numbers, which
  are those of the dense sum. With ``lazy_rows=True`` only the touched rows
  of the parameter and of its slots move, exactly as the dense rule would
  move a variable made of those rows (step counts stay global), and
  ``update`` returns a row-sparse update (apply it with
  ``ox.apply_updates`` or ``ox.apply``). The base options act on those rows:
  weight decay decays only touched rows; ``clipnorm`` / ``global_clipnorm``
  take norms over the summed rows (the same norms as of the dense sum);
  the EMA averages and overwrites only touched rows; accumulation sums rows
  into a dense accumulator and, on the update call, moves every row touched
  during the cycle (see ``ox.accumulate_rows``); a static loss scale divides
  the rows, and under ``ox.loss_scale_optimizer`` a non-finite value in any
  row skips the whole step. Dense leaves behave as always.

  ``learning_rate`` is a number, a schedule ``step -> lr`` (optax's, ours, or a
  Keras ``LearningRateSchedule``; it sees every call, as in Keras), or a
  zero-argument callable, which is called on each ``update`` and so, under
  ``jax.jit``, once at trace time. Every number may also be injected with
  ``optax.inject_hyperparams``. ``update`` needs ``params`` when weight decay
  or EMA is on.
"""


def with_base_doc(factory):
  """Fills the ``{base}`` line of a factory's docstring (absent under -OO)."""
  if factory.__doc__:
    factory.__doc__ = factory.__doc__.replace(
        "  {base}", BASE_DOC.rstrip("\n"))
  return factory


@dataclasses.dataclass(frozen=True)
class KerasSpec:
  """How a factory maps onto its Keras class.

  Attributes:
    class_name: the Keras class, e.g. ``"Adam"``.
    factory: the package's factory with that class's signature.
    own_keys: the factory's own config keys, in Keras's ``get_config`` order.
    state_class: the rule's state (its slots are read by ``state_from_keras``).
    slot_groups: ``keras_optimizer -> [[(keras slot name, state field)]]``,
      the slots in the order Keras's ``build`` adds them: each group's slots
      interleaved variable by variable, groups one after another.
    optional_slots: state fields the package may keep where the Keras
      optimizer has no variables; imported, they stay at their initial zeros
      (RMSprop's momentum slot, kept for an injected momentum of 0).
    partial_slots: slot fields Keras adds to some variables only (Muon's
      Adam-branch "velocity"); the state holds None for the others.
    non_slots: state fields besides ``count`` that are not Keras variables;
      imported, they keep their ``init`` value (a hyperparameter a state
      carries for a helper).
    scalars: ``((keras variable name, state field), ...)``, scalar variables
      the rule's ``build`` adds after its slots (e.g. Nadam's ``u_product``).
    import_slots: optional ``{field: [value per Keras variable]} -> {field:
      [value per non-None leaf of that field]}``, for a rule that keeps a
      slot for some leaves only (Adafactor); None: one value per leaf.
  """
  class_name: str
  factory: Callable[..., Any]
  own_keys: tuple[str, ...]
  state_class: type
  slot_groups: Callable[[Any], list]
  optional_slots: tuple[str, ...] = ()
  partial_slots: tuple[str, ...] = ()
  non_slots: tuple[str, ...] = ()
  scalars: tuple[tuple[str, str], ...] = ()
  import_slots: Optional[Callable[[dict], dict]] = None
  # False for rules that mix the rows of a leaf (a per-leaf trust ratio,
  # factored moments, orthogonalization): their factory refuses lazy_rows.
  row_separable: bool = True


# keras_optimizer's keyword arguments: the base options every factory passes on.
BASE_DEFAULTS = {
    p.name: p.default for p in inspect.signature(keras_optimizer).parameters
    .values() if p.kind is p.KEYWORD_ONLY}
BASE_ARGUMENTS = tuple(BASE_DEFAULTS)


def build(spec: KerasSpec, name: str, rule, arguments: dict, *,
          base: Optional[dict] = None,
          params_needed_for: Sequence[str] = ()) -> KerasOptimizer:
  """The optimizer ``spec.factory(**arguments)``: ``rule`` with the base
  options.

  Args:
    spec: the factory's :class:`KerasSpec`.
    name: the default ``name``.
    rule: ``lr -> GradientTransformation``, the rule's step.
    arguments: every argument of the factory, as the config keeps them.
    base: base options that differ from ``arguments`` (a rule that decays
      the weights itself passes ``weight_decay=None`` here).
    params_needed_for: what in the rule makes ``update`` need ``params``.
  """
  options = {k: arguments.get(k, v) for k, v in BASE_DEFAULTS.items()}
  _common.check_optional_str("name", arguments.get("name"))
  if base:  # What the rule takes over is checked as given, all the same.
    check_base_arguments(
        **{k: v for k, v in options.items() if k != "use_ema"})
    options.update(base)
  if options.get("lazy_rows") and not spec.row_separable:
    raise ValueError(
        f"`lazy_rows=True` is not supported by `{name}`: its update mixes "
        "the rows of a parameter, so it cannot run on the touched rows "
        "alone. Received: lazy_rows=True")
  init_fn, update_fn, fused_step = _assemble(
      rule, params_needed_for=tuple(params_needed_for), **options)
  config = dict(arguments, name=arguments["name"] or name)
  return KerasOptimizer(init_fn, update_fn, config=config,
                        factory=spec.factory, fused_step=fused_step)
