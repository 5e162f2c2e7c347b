"""Keras's step order: how an optimizer is put together from its parts.

A Keras optimizer step is, in order: unscale the gradients by the static
loss-scale factor, accumulate them, clip them, decay the weights, apply the
optimizer's own rule, and keep the parameter EMA. :func:`keras_optimizer`
chains the package's transformations in exactly that order; the factories
(:func:`optax_suite.adam` and friends) only add their own rule, through
:func:`build`.

Read top to bottom: the state and the optimizer type; the steps a wrapper
runs (:func:`split_step`, :func:`step_of`, :func:`as_step_transform`);
:func:`keras_optimizer` and :func:`assemble`, then the module-level pieces
of the step it assembles (``_chain`` ... ``_fused_step``); last, what the
factories share (:class:`KerasSpec`, :func:`build`).
"""

from __future__ import annotations

import dataclasses
import functools
import types
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import chex
import jax
import jax.numpy as jnp
import optax

from optax_suite import _base_options
from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _trees
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
  config: Mapping[str, Any]  # Read-only: editing it would not rebuild.
  factory: Callable[..., Any]
  fused_step: Callable[..., tuple]
  assign: Optional[Callable[[Any], tuple]]

  def __new__(cls, init: Callable[..., Any], update: Callable[..., Any], *,
              config: Mapping[str, Any], factory: Callable[..., Any],
              fused_step: Callable[..., tuple],
              assign: Optional[Callable[[Any], tuple]] = None):
    self = super().__new__(cls, init, update)
    # A read-only view of a copy: editing `opt.config` would change
    # `get_config` but not the optimizer (issue 18 item 10).
    frozen = types.MappingProxyType(dict(config))
    for field, value in (("config", frozen), ("factory", factory),
                         ("fused_step", fused_step), ("assign", assign)):
      object.__setattr__(self, field, value)
    return self

  def __setattr__(self, name: str, value: Any) -> None:
    raise AttributeError(
        f"A KerasOptimizer's fields are set at construction; cannot set "
        f"{name!r}.")

  def __getstate__(self):  # The fields travel in `__getnewargs_ex__`.
    return None

  def __getnewargs_ex__(self):  # copy and pickle keep every field.
    return ((self.init, self.update), dict(
        config=dict(self.config), factory=self.factory,
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


def keras_optimizer(
    scale_by_rule: Callable[[Any], optax.GradientTransformation],
    *,
    learning_rate: _numerics.ScalarOrSchedule = 0.001,
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
  options = _base_options.BaseOptions(
      learning_rate=learning_rate, weight_decay=weight_decay,
      clipnorm=clipnorm, clipvalue=clipvalue, global_clipnorm=global_clipnorm,
      use_ema=use_ema, ema_momentum=ema_momentum,
      ema_overwrite_frequency=ema_overwrite_frequency,
      loss_scale_factor=loss_scale_factor,
      gradient_accumulation_steps=gradient_accumulation_steps,
      exclude_from_weight_decay=exclude_from_weight_decay,
      weight_decay_mask=weight_decay_mask, lazy_rows=lazy_rows)
  init_fn, update_fn, fused_step = assemble(scale_by_rule, options)
  return KerasOptimizer(
      init_fn, update_fn,
      config=dict(options.config(), scale_by_rule=scale_by_rule),
      factory=keras_optimizer, fused_step=fused_step)


Rule = Callable[[Any], optax.GradientTransformation]  # lr -> the rule's step.


def assemble(rule: Rule, options: _base_options.BaseOptions,
             params_needed_for: Sequence[str] = ()) -> tuple:
  """``(init, update, fused_step)`` of ``rule`` with the base ``options``.

  ``params_needed_for`` names what else (a rule's own weight decay) makes
  ``update`` refuse ``params=None``; it is checked first.
  """
  rule(0.0)  # Runs the rule's own argument checks now.
  needs = tuple(params_needed_for) + tuple(
      n for n, on in (("weight decay", options.weight_decay is not None),
                      ("EMA (`use_ema=True`)", options.use_ema)) if on)
  init_fn = functools.partial(_init, rule, options)
  update_fn = functools.partial(_update, rule, options, needs)
  k = options.gradient_accumulation_steps
  # With lazy rows a micro-step's update is already row-sparse (-0.0 rows).
  if k is None or options.lazy_rows:
    fused_step = split_step(optax.GradientTransformation(init_fn, update_fn))
  else:
    fused_step = functools.partial(_fused_step, rule, options, needs)
  return init_fn, update_fn, fused_step


def _clip(options) -> optax.GradientTransformation:
  if options.clipnorm is not None:
    return _clipping.clip_by_norm(options.clipnorm)
  if options.global_clipnorm is not None:
    return _clipping.clip_by_global_norm(options.global_clipnorm)
  if options.clipvalue is not None:
    return _clipping.clip_by_value(options.clipvalue)
  return optax.identity()


def _chain(rule, options, lr) -> optax.GradientTransformation:
  """Clip, the rule at ``lr``, the weight decay: one update step's work."""
  tx = optax.chain(
      _clip(options), rule(lr), _weight_decay.descend_with_weight_decay(
          options.weight_decay, lr,
          weight_decay_mask=options.weight_decay_mask,
          exclude_from_weight_decay=options.exclude_from_weight_decay))
  return _sparse.lazy_rows_of_checked(tx) if options.lazy_rows else tx


def _step_transform(rule, options, lr) -> optax.GradientTransformation:
  """:func:`_chain`, behind gradient accumulation when that is on."""
  tx = _chain(rule, options, lr)
  k = options.gradient_accumulation_steps
  if k is None:
    return tx
  if options.lazy_rows:
    return _sparse.accumulate_rows(tx, k)
  return _accumulation.accumulate_gradients(tx, k)


def _average(options) -> Optional[optax.GradientTransformation]:
  """The parameter EMA, or None without ``use_ema``."""
  if not options.use_ema:
    return None
  average = _ema.ema(
      options.ema_momentum, options.ema_overwrite_frequency,
      gradient_accumulation_steps=options.gradient_accumulation_steps)
  return _sparse.lazy_rows_of_checked(average) if options.lazy_rows else average


def _static_scale(options) -> jax.Array:
  factor = options.loss_scale_factor
  return jnp.asarray(1.0 if factor is None else factor, jnp.float32)


def _init(rule, options, params) -> KerasOptimizerState:
  _trees.check_not_complex(params)  # Whatever the rule: never skip silently.
  average = _average(options)
  return KerasOptimizerState(
      count=jnp.zeros([], jnp.int32),
      loss_scale_factor=_static_scale(options),
      inner=_step_transform(rule, options,
                            jnp.zeros([], jnp.float32)).init(params),
      ema=average.init(params) if average else optax.EmptyState(),
  )


# (rule, options, params layout) -> the state structure `init` gives. The
# entry holds `rule` and `options` themselves, so their ids stay theirs.
_STATE_STRUCTURES: dict = {}


def _abstract(tree: Any) -> Any:
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(jnp.shape(x), x.dtype)
      if hasattr(x, "dtype") else x, tree,
      is_leaf=lambda x: x is None or _sparse.is_row_sparse(x))


def _check_state(rule, options, state, params, updates) -> None:
  """``state`` must be what this optimizer's ``init`` gives (trace-time).

  Another optimizer's state (``ox.sgd().init(p)`` given to ``ox.adam()``),
  optax's own, or one for other parameters would fail deep inside the rule
  with an ``AttributeError``, or worse run; it is refused here with both
  structures shown, and a leaf of another shape (a state for other
  parameters) with its path. The expected structure and shapes are
  ``jax.eval_shape`` of ``init``, once per parameter layout.
  """
  if not isinstance(state, KerasOptimizerState):
    raise ValueError(
        "`state` must be the state of this optimizer (what its `init` "
        f"returns, a KerasOptimizerState). Received: a "
        f"{type(state).__name__}: {jax.tree.structure(state)}")
  template = _abstract(params if params is not None else updates)
  leaves, treedef = jax.tree.flatten(template)
  key = (id(rule), id(options), treedef, tuple(
      (getattr(x, "shape", None), str(getattr(x, "dtype", type(x))))
      for x in leaves))
  entry = _STATE_STRUCTURES.get(key)
  if entry is None or entry[0] is not rule or entry[1] is not options:
    try:
      abstract = jax.eval_shape(functools.partial(_init, rule, options),
                                template)
      expected = (jax.tree.structure(abstract), [
          (jax.tree_util.keystr(path), x.shape)
          for path, x in jax.tree_util.tree_leaves_with_path(abstract)])
    except Exception:  # pylint: disable=broad-except
      return  # Gradients that are not parameter-like: nothing to compare.
    if len(_STATE_STRUCTURES) >= 64:
      _STATE_STRUCTURES.pop(next(iter(_STATE_STRUCTURES)))
    entry = _STATE_STRUCTURES[key] = (rule, options, expected)
  structure, shapes = entry[2]
  got: Any = jax.tree.structure(state)
  if got != structure:
    raise ValueError(
        "`state` is not a state of this optimizer for these parameters (is "
        "it another optimizer's, or another configuration's?).\n"
        f"  state:    {got}\n  expected: {structure}")
  for leaf, (path, shape) in zip(jax.tree.leaves(state), shapes):
    if jnp.shape(leaf) != shape:
      raise ValueError(
          f"`state` leaf state{path} has shape {jnp.shape(leaf)}, but these "
          f"parameters give it shape {shape} (is it a state for other "
          "parameters?).")


def _prepare(options, needs, updates, state, params) -> tuple:
  """Checks, the dense sum of BCOO leaves (default), the static unscale.

  Returns the gradients to step with, this call's learning rate, and the
  static scale the new state keeps.
  """
  for needed_for in needs:
    _trees.check_params(params, needed_for)
  _trees.check_same_structure(updates, params)
  if _sparse.has_row_sparse(updates):
    _sparse.check_row_sparse(updates, params)
    if not options.lazy_rows:  # Keras 3 treats it as the dense gradient.
      updates = _sparse.densify(updates)
  # The factor is the optimizer's own (the constructor's, or an injected
  # hyperparameter's current value), as Keras reads its attribute at each
  # apply; the state's copy only tells that `loss_scale_optimizer` turned
  # it off (0), and is refreshed for `scale_loss`.
  off = state.loss_scale_factor == 0
  scale = jnp.where(off, 0.0, _static_scale(options))
  if options.loss_scale_factor is not None:
    divisor = jnp.where(off, 1.0, scale)
    updates = jax.tree.map(
        lambda g: g / divisor.astype(g.dtype)
        if _trees.is_trainable(g) else g, updates)
  lr = _numerics.learning_rate_at(options.learning_rate, state.count)
  return updates, lr, scale


def _update(rule, options, needs, updates, state, params=None, **extra_args):
  _check_state(rule, options, state, params, updates)
  updates, lr, scale = _prepare(options, needs, updates, state, params)
  # `optax.chain` hands `extra_args` to the parts that take them (a rule
  # built with `optax.GradientTransformationExtraArgs`) and not the others.
  updates, inner = _step_transform(rule, options, lr).update(
      updates, state.inner, params, **extra_args)
  ema_state = state.ema
  average = _average(options)
  if average is not None:
    updates, ema_state = average.update(updates, state.ema, params)
  return updates, KerasOptimizerState(
      optax.safe_increment(state.count), scale, inner, ema_state)


def _fused_step(rule, options, needs, grads, state, params) -> tuple:
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
  k = options.gradient_accumulation_steps
  _check_state(rule, options, state, params, grads)
  grads, lr, scale = _prepare(options, needs, grads, state, params)
  acc_state = state.inner
  is_update = (acc_state.count + 1) % k == 0

  def update_branch(operands):
    grads, acc, chain_state, params = operands
    updates, chain_state = _chain(rule, options, lr).update(
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
  average = _average(options)
  if average is not None:
    zeros = _trees.tree_map(_numerics.identity_update, params)
    _, ema_state = average.update(zeros, ema_state, params)
    if options.ema_overwrite_frequency is not None:  # Lands exactly.
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


# ----------------------------------------------------------------------------
# What every factory shares: how it maps onto its Keras class, and `build`.

BaseOptions = _base_options.BaseOptions
with_base_doc = _base_options.with_base_doc


@dataclasses.dataclass(frozen=True)
class KerasSpec:
  """How a factory maps onto its Keras class.

  Attributes:
    class_name: the Keras class, e.g. ``"Adam"``.
    default_name: the ``name`` Keras gives it, e.g. ``"adam_w"``.
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
  default_name: str
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


def build(spec: KerasSpec, rule: Rule, options: BaseOptions, own: dict, *,
          name: Optional[str], decay_in_rule: bool = False,
          params_needed_for: Sequence[str] = ()) -> KerasOptimizer:
  """The optimizer ``spec.factory(learning_rate, **own, ...)`` makes.

  Args:
    spec: the factory's :class:`KerasSpec`.
    rule: ``lr -> GradientTransformation``, the rule's step.
    options: the factory's base arguments, checked.
    own: the factory's own arguments, in its signature's order, as its
      config keeps them.
    name: the factory's ``name`` argument (None: ``spec.default_name``).
    decay_in_rule: the rule decays the weights itself (Muon), so the base
      chain gets no weight decay; the config keeps the options as given.
    params_needed_for: what in the rule makes ``update`` need ``params``.
  """
  _checks.check_optional_str("name", name)
  if options.lazy_rows and not spec.row_separable:
    raise ValueError(
        f"`lazy_rows=True` is not supported by `{spec.default_name}`: its "
        "update mixes the rows of a parameter, so it cannot run on the "
        "touched rows alone. Received: lazy_rows=True")
  chain_options = options.without_weight_decay() if decay_in_rule else options
  init_fn, update_fn, fused_step = assemble(rule, chain_options,
                                            params_needed_for)
  base = options.config()
  config = {"learning_rate": base.pop("learning_rate"), **own}
  for key, value in base.items():
    config[key] = value
    if key == "gradient_accumulation_steps":  # Keras's order: name here.
      config["name"] = name or spec.default_name
  return KerasOptimizer(init_fn, update_fn, config=config,
                        factory=spec.factory, fused_step=fused_step)
