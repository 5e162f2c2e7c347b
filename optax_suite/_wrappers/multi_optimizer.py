"""Keras's MultiOptimizer and OptimizerMap: optimizers assigned by path.

A leaf's path is its key path joined with "/", as Keras joins layer paths
(``{'encoder': {'dense': {'kernel': w}}}`` is ``"encoder/dense/kernel"``);
it stands for Keras's ``variable.path``. The combination is
``optax.partition`` over the optimizers the paths select.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import MutableMapping
from typing import Any, Callable, NamedTuple, Optional, Union

import chex
import jax
import jax.numpy as jnp
import optax

from optax_suite import _base_options
from optax_suite import _numerics
from optax_suite import _optimizer
from optax_suite import _patterns
from optax_suite import _trees

_UNTRAINED = "untrained"  # Label of the integer/boolean leaves (zero update).


def _check_inner(optimizer: Any, where: str) -> None:
  """An optimizer built by this package's factories, not a wrapper."""
  factory = getattr(optimizer, "factory", None)
  if not isinstance(getattr(optimizer, "config", None), Mapping) or (
      factory is None):
    raise ValueError(
        f"{where} must be an optimizer built by an optax_suite factory "
        f"(ox.adam, ox.muon, ...). Received: {optimizer!r}")
  if factory is multi_optimizer:
    raise ValueError(f"{where} cannot be a multi_optimizer.")
  if factory.__name__ == "loss_scale_optimizer":
    raise ValueError(f"{where} cannot be a loss_scale_optimizer.")


class OptimizerMap(MutableMapping):
  """Keras's ``OptimizerMap``: path keys and patterns to optimizers.

  ``m[path]`` is the optimizer stored under exactly ``path`` if there is
  one; else the one whose key ``re.fullmatch``es ``path`` (a ``ValueError``
  if several do, as Keras raises); else ``default_optimizer``. So
  ``"encoder/.*"`` covers every leaf under ``encoder``, and ``"encoder"``
  only a leaf whose path is exactly ``"encoder"``.

  Args:
    default_optimizer: the optimizer of every path no key matches.
    optimizer_map: a dict ``{key or pattern: optimizer}``, or None.

  Example:
    >>> import optax_suite as ox
    >>> m = ox.OptimizerMap(ox.rmsprop(), {"encoder/.*": ox.adam()})
    >>> m["decoder"] = ox.adamax()
    >>> m["encoder/layer_0/kernel"].config["name"]
    'adam'
    >>> m["decoder"].config["name"], m["decoder/kernel"].config["name"]
    ('adamax', 'rmsprop')
  """

  def __init__(self, default_optimizer: Any,
               optimizer_map: Optional[dict] = None):
    _check_inner(default_optimizer, "`default_optimizer`")
    if optimizer_map is not None and not isinstance(optimizer_map, dict):
      raise ValueError(
          "`optimizer_map` must be a dict or None. Received: "
          f"optimizer_map={optimizer_map!r}")
    self._default_optimizer = default_optimizer
    self._optimizer_map: dict[str, Any] = {}
    for key, optimizer in (optimizer_map or {}).items():
      self[key] = optimizer

  @property
  def default_optimizer(self) -> Any:
    return self._default_optimizer

  def __getitem__(self, key: str) -> Any:
    if key in self._optimizer_map:
      return self._optimizer_map[key]
    matching = [k for k in self._optimizer_map
                if _patterns.compiled(k, "optimizer_map").fullmatch(key)]
    if len(matching) > 1:
      raise ValueError(
          f"Multiple optimizers assigned to variable {key}: the patterns "
          f"{matching} all match it.")
    if matching:
      return self._optimizer_map[matching[0]]
    return self._default_optimizer

  def __setitem__(self, key: str, optimizer: Any) -> None:
    if key in self._optimizer_map:
      raise ValueError(
          f"'{key}' already exists in the OptimizerMap: keys must not be "
          "duplicated.")
    if not isinstance(key, str):
      raise ValueError(f"An OptimizerMap key must be a string. Received: "
                       f"key={key!r}")
    _patterns.compile_pattern(key, "optimizer_map", key)  # RE2: linear time.
    _check_inner(optimizer, f"The optimizer for {key!r}")
    self._optimizer_map[key] = optimizer

  def __delitem__(self, key: str) -> None:
    del self._optimizer_map[key]

  def __len__(self) -> int:
    return len(self._optimizer_map)

  def __iter__(self):
    return iter(self._optimizer_map)

  def __call__(self, path: str) -> Any:
    return self[path]


class MultiOptimizerState(NamedTuple):
  """State of :func:`multi_optimizer`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> opt = ox.multi_optimizer(ox.OptimizerMap(ox.adam()))
    >>> state = opt.init({'w': jnp.ones(2)})
    >>> int(state.count), sorted(state.inner.inner_states)
    (0, ['0'])
  """
  count: chex.Array  # int32 [], calls so far (Keras's own `iterations`).
  inner: Any  # optax.partition's state: {label: inner optimizer's state}.


def _assign(optimizer_map, tree, loss_scale_factor, known):
  """Each leaf's optimizer: (labels tree, {label: optimizer}).

  Labels number the optimizers in Keras's order: those of an OptimizerMap
  (its values, then its default), then new ones as the paths meet them.
  Each is rebuilt with the multi-optimizer's ``loss_scale_factor``, as Keras
  sets it on every inner optimizer.
  """
  found = list(known)

  def label(path, leaf):
    if not _trees.is_trainable(leaf):
      return _UNTRAINED
    name = _trees.path_name(path)
    opt = optimizer_map(name)
    _check_inner(opt, f"The optimizer for variable {name!r}")
    for i, seen in enumerate(found):
      if seen is opt:
        return str(i)
    found.append(opt)
    return str(len(found) - 1)

  labels = jax.tree_util.tree_map_with_path(label, tree)
  used = set(jax.tree.leaves(labels))
  transforms = {
      str(i): opt.factory(**dict(opt.config,
                                 loss_scale_factor=loss_scale_factor))
      for i, opt in enumerate(found) if str(i) in used}
  if _UNTRAINED in used:
    transforms[_UNTRAINED] = optax.stateless(
        lambda u, p: jax.tree.map(_numerics.zero_update, u))
  return labels, transforms


def multi_optimizer(
    optimizer_map: Union[OptimizerMap, Callable[[str], Any]],
    loss_scale_factor: Optional[float] = None,
    name: Optional[str] = None,
) -> _optimizer.KerasOptimizer:
  """Keras 3's ``MultiOptimizer``: each leaf trained by its own optimizer.

  ``optimizer_map`` is an :class:`OptimizerMap` or a callable
  ``path -> optimizer``; a leaf's path is its key path joined with ``"/"``
  as Keras joins layer paths (``"encoder/dense/kernel"``). Each optimizer
  sees only its leaves (``optax.partition``), so its clipping, global norm,
  weight decay, EMA and step counts are its own, as in Keras. Keras sets
  ``loss_scale_factor`` on every inner optimizer, None included; so does
  this. Integer and boolean leaves get a zero update.
  ``ox.scale_loss(loss, state)`` reads that factor;
  ``ox.finalize_variable_values(params, state)`` reads the inner EMAs.

  Args:
    optimizer_map: an :class:`OptimizerMap`, or a callable from a path to an
      optax_suite optimizer.
    loss_scale_factor: static loss scale of every inner optimizer, or None.
    name: kept in the config.

  Returns:
    A :class:`KerasOptimizer`; its state is a :class:`MultiOptimizerState`.

  Example:
    >>> import jax, jax.numpy as jnp, optax, optax_suite as ox
    >>> opt = ox.multi_optimizer(ox.OptimizerMap(
    ...     ox.adam(0.1), {"head/.*": ox.rmsprop(0.5, rho=0.0)}))
    >>> params = {'body': {'w': jnp.zeros(2)}, 'head': {'w': jnp.zeros(2)}}
    >>> grads = jax.tree.map(jnp.ones_like, params)
    >>> updates, _ = opt.update(grads, opt.init(params), params)
    >>> updates['body']['w'], updates['head']['w']
    (Array([-0.09999901, -0.09999901], dtype=float32),
     Array([-0.5, -0.5], dtype=float32))
  """
  if not (isinstance(optimizer_map, OptimizerMap) or callable(optimizer_map)):
    raise ValueError(
        "`optimizer_map` must be an OptimizerMap or a callable path -> "
        f"optimizer. Received: optimizer_map={optimizer_map!r}")
  # Checked as every optimizer's own `loss_scale_factor` is.
  _base_options.BaseOptions(loss_scale_factor=loss_scale_factor)
  known: list[Any] = []
  if isinstance(optimizer_map, OptimizerMap):
    # A copy: editing the caller's map after this must not reassign leaves
    # between `init` and `update` (issue 18 item 10).
    optimizer_map = OptimizerMap(optimizer_map.default_optimizer,
                                 dict(optimizer_map.items()))
    for opt in list(optimizer_map.values()) + [
        optimizer_map.default_optimizer]:
      if not any(opt is k for k in known):
        known.append(opt)

  def partition(tree):
    labels, transforms = _assign(optimizer_map, tree, loss_scale_factor,
                                 known)
    return optax.partition(transforms, labels)

  def init_fn(params):
    return MultiOptimizerState(jnp.zeros([], jnp.int32),
                               partition(params).init(params))

  def update_fn(updates, state, params=None, **extra_args):
    _trees.check_same_structure(updates, params)
    updates, inner = partition(updates).update(updates, state.inner, params,
                                               **extra_args)
    return updates, MultiOptimizerState(optax.safe_increment(state.count),
                                        inner)

  def fused_step(grads, state, params):
    """Each optimizer's fused step on its own leaves, in ``optax.partition``'s
    state: the partition passes the new parameters through as updates."""
    _trees.check_same_structure(grads, params)
    labels, transforms = assign(grads)
    steps = {label: _optimizer.as_step_transform(tx)
             for label, tx in transforms.items()}
    params, inner = optax.partition(steps, labels).update(
        grads, state.inner, params)
    return params, MultiOptimizerState(optax.safe_increment(state.count),
                                       inner)

  def assign(tree):  # (labels tree, {label: optimizer}) for a tree.
    return _assign(optimizer_map, tree, loss_scale_factor, known)

  return _optimizer.KerasOptimizer(
      init_fn, update_fn, config=dict(
          optimizer_map=optimizer_map, loss_scale_factor=loss_scale_factor,
          name=name or "multi_optimizer"),
      factory=multi_optimizer, fused_step=fused_step, assign=assign)
