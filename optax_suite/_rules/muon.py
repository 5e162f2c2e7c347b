"""Keras's Muon as an optax transformation: Newton-Schulz for 2-D leaves,
Keras's Adam branch for every other leaf."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional, Sequence

import chex
import jax
import jax.numpy as jnp
import optax

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite import _patterns
from optax_suite import _trees
from optax_suite._options import weight_decay as _weight_decay


class ScaleByMuonState(NamedTuple):
  """State of :func:`scale_by_muon`.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> params = {'dense': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones(2)}}
    >>> state = ox.scale_by_muon().init(params)
    >>> state.mu['dense']['kernel'].shape, state.nu['dense']['kernel']
    ((2, 2), None)
    >>> state.nu['dense']['bias']
    Array([0., 0.], dtype=float32)
  """
  count: chex.Array  # int32 [], update steps taken (Keras `iterations`).
  mu: optax.Updates  # like params (slot dtype), momentum of every leaf.
  nu: optax.Updates  # like params, Adam's 2nd moment; None on Muon leaves.


def uses_newton_schulz(path: str, leaf: Any, exclude_layers=None,
                       exclude_embeddings: bool = True) -> bool:
  """Whether Muon orthogonalizes this leaf (else Keras's Adam branch runs).

  As Keras's ``Muon._should_use_adamw``, with ``path`` (see
  ``_trees.path_name``) where Keras reads ``variable.path``: a floating leaf of
  rank 2 takes the Newton-Schulz branch unless ``exclude_embeddings`` is on
  and ``"embedding"`` is in the lower-cased path (Keras's ``Embedding``
  layer's ``embedding/embeddings``, Flax's ``Embed`` param ``embedding``), or
  a pattern of ``exclude_layers`` is found (``re.search``) in the path.
  """
  if not _trees.is_trainable(leaf) or jnp.ndim(leaf) != 2:
    return False
  if exclude_embeddings and "embedding" in path.lower():
    return False
  return not any(_patterns.compiled(k, "exclude_layers").search(path)
                 for k in exclude_layers or ())


def _route(tree, exclude_layers, exclude_embeddings):
  """A tree of booleans, True on the leaves of the Newton-Schulz branch."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: uses_newton_schulz(
          _trees.path_name(path), x, exclude_layers, exclude_embeddings),
      tree, is_leaf=lambda x: x is None)


def newton_schulz(x: jax.Array, a: float, b: float, c: float,
                  steps: Any) -> jax.Array:
  r"""Keras's quintic Newton-Schulz iteration on a matrix, on device.

  ``x`` is transposed to be wide, scaled to Frobenius norm 1 (plus 1e-7),
  and iterated ``steps`` times,
  :math:`A = XX^\top,\ X \leftarrow aX + (bA + (cA)A)X`, in Keras's order of
  operations. The loop is a ``lax.fori_loop``: one compiled body, no host
  round trip, ``steps`` may be traced.

  Under sharding the products need data from other shards: XLA all-gathers
  inside the loop. Measured on a 2x4 mesh (tests/test_sharding.py): a
  16x32 matrix sharded on both axes is gathered in quarter panels (16x8),
  never whole; a matrix sharded on one axis only (12x8 over 4 devices) is
  gathered whole onto every device. Slots and results keep their sharding.

  Example:
    >>> import jax.numpy as jnp, optax_suite as ox
    >>> from optax_suite._rules.muon import newton_schulz
    >>> newton_schulz(jnp.array([[2.0, 0.0], [0.0, 1.0]]), 1.5, -0.5, 0.0,
    ...               30).round(4)
    Array([[1., 0.],
           [0., 1.]], dtype=float32)
  """
  wide = x.shape[-2] <= x.shape[-1]
  if not wide:
    x = jnp.swapaxes(x, -1, -2)
  x = x / (jnp.linalg.norm(x, axis=(-2, -1), keepdims=True) + 1e-7)

  def body(_, x):
    gram = x @ jnp.swapaxes(x, -1, -2)
    poly = b * gram + (c * gram) @ gram
    return a * x + poly @ x

  x = jax.lax.fori_loop(0, steps, body, x)
  return x if wide else jnp.swapaxes(x, -1, -2)


def scale_by_muon(
    learning_rate: _numerics.ScalarOrSchedule = 1.0,
    adam_beta_1: float = 0.9,
    adam_beta_2: float = 0.999,
    epsilon: float = 1e-7,
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
    slot_dtype: Optional[Any] = None,
) -> optax.GradientTransformation:
  r"""Scales updates by Keras's Muon rule, learning rate included.

  Leaves are routed by :func:`uses_newton_schulz`: the path of a leaf is its
  key path joined with ``"/"`` as Keras joins layer paths
  (``{'encoder': {'dense': {'kernel': w}}}`` is ``"encoder/dense/kernel"``),
  and stands for Keras's ``variable.path``. A rank-2 leaf whose path matches
  no ``exclude_layers`` pattern (``re.search``), and has no ``"embedding"``
  in it (lower-cased) when ``exclude_embeddings``, takes the Newton-Schulz
  branch, with :math:`\eta` the learning rate and :math:`\mu` the momentum:

  .. math::
    m &\leftarrow m + (g + m(\mu - 1)) \\
    o &= \mathrm{NS}_{a,b,c}^{n}(g + \mu m \text{ if nesterov else } m) \\
    u &= \eta\, o \sqrt{\max(\text{rows}, \text{cols})}\; \text{rms\_rate}

  (no ``rms_rate`` factor when it is None; ``NS`` is :func:`newton_schulz`).
  Every other leaf takes Keras's Adam branch with
  :math:`\eta_a = \eta \cdot \text{adam\_lr\_ratio}` and :math:`t` the update
  step: :math:`m \leftarrow m + (g - m)(1 - \beta_1)`,
  :math:`v \leftarrow v + (g^2 - v)(1 - \beta_2)`,
  :math:`u = m\,\eta_a\sqrt{1 - \beta_2^t}/(1 - \beta_1^t)
  / (\sqrt v + \epsilon)`.
  The output points up the gradient. Weight decay is not part of this rule
  (:func:`muon` adds Keras's two decay rates). Low-precision leaves are
  computed in float32 and cast back.

  Args:
    learning_rate: number or schedule ``step -> lr`` (step = update count).
    adam_beta_1: Adam branch's first-moment decay, in [0, 1).
    adam_beta_2: Adam branch's second-moment decay, in [0, 1).
    epsilon: Adam branch's epsilon hat, >= 0.
    exclude_layers: regular expressions; a leaf whose path matches one takes
      the Adam branch.
    exclude_embeddings: leaves with "embedding" in their path take Adam.
    muon_a: Newton-Schulz coefficient ``a``.
    muon_b: Newton-Schulz coefficient ``b``.
    muon_c: Newton-Schulz coefficient ``c``.
    adam_lr_ratio: the Adam branch's learning rate over ``learning_rate``.
    momentum: the Muon branch's momentum, in [0, 1).
    ns_steps: number of Newton-Schulz iterations, an integer >= 0.
    nesterov: Nesterov momentum in the Muon branch.
    rms_rate: Moonlight's update scale, or None for none.
    slot_dtype: dtype of the moments; default the parameter's dtype.

  Returns:
    An ``optax.GradientTransformation``.

  Example:
    >>> import jax.numpy as jnp, optax, optax_suite as ox
    >>> tx = optax.chain(ox.scale_by_muon(rms_rate=None), optax.scale(-0.1))
    >>> params = {'w': jnp.zeros((2, 2)), 'b': jnp.zeros(2)}
    >>> grads = {'w': jnp.array([[3.0, 0.0], [0.0, 4.0]]),
    ...          'b': jnp.array([0.5, -0.5])}
    >>> updates, _ = tx.update(grads, tx.init(params))
    >>> updates['b']
    Array([-0.0999987,  0.0999987], dtype=float32)
    >>> updates['w'].round(2)
    Array([[-0.07, -0.  ],
           [-0.  , -0.11]], dtype=float32)
  """
  _checks.check_flag("exclude_embeddings", exclude_embeddings)
  _checks.check_flag("nesterov", nesterov)
  check_muon_arguments(
      learning_rate=learning_rate, adam_beta_1=adam_beta_1,
      adam_beta_2=adam_beta_2, epsilon=epsilon, exclude_layers=exclude_layers,
      muon_a=muon_a, muon_b=muon_b, muon_c=muon_c,
      adam_lr_ratio=adam_lr_ratio, momentum=momentum, ns_steps=ns_steps,
      rms_rate=rms_rate)

  def init_fn(params):
    route = _route(params, exclude_layers, exclude_embeddings)
    return ScaleByMuonState(
        jnp.zeros([], jnp.int32),
        _trees.slots(params, slot_dtype),
        _trees.tree_map(
            lambda p, ns: None if ns else _trees.zeros_like(p, slot_dtype),
            params, route))

  def update_fn(updates, state, params=None):
    del params
    lr = _numerics.learning_rate_at(learning_rate, state.count)
    adam_lr = lr * adam_lr_ratio
    t = (state.count + 1).astype(jnp.float32)
    b1_power = jnp.power(jnp.asarray(adam_beta_1, jnp.float32), t)
    b2_power = jnp.power(jnp.asarray(adam_beta_2, jnp.float32), t)
    alpha = adam_lr * jnp.sqrt(1 - b2_power) / (1 - b1_power)
    one_minus_b1, one_minus_b2 = 1 - adam_beta_1, 1 - adam_beta_2
    momentum_minus_1 = momentum - 1

    def leaf(m, g, v):
      if m is None:
        return _numerics.zero_update(g), None, None
      dt = _numerics.compute_dtype(g.dtype)
      g32, m32 = g.astype(dt), m.astype(dt)
      if v is not None:  # Adam branch (Keras: a velocity slot exists).
        v32 = v.astype(dt)
        m32 = m32 + (g32 - m32) * one_minus_b1
        v32 = v32 + (jnp.square(g32) - v32) * one_minus_b2
        u = (m32 * alpha.astype(dt)) / (jnp.sqrt(v32) + epsilon)
        return u.astype(g.dtype), m32.astype(m.dtype), v32.astype(v.dtype)
      m32 = m32 + (g32 + m32 * momentum_minus_1)
      direction = g32 + momentum * m32 if nesterov else m32
      u = lr.astype(dt) * newton_schulz(direction, muon_a, muon_b, muon_c,
                                        ns_steps)
      if rms_rate is not None:
        u = u * jnp.sqrt(jnp.asarray(max(g.shape), dt)) * rms_rate
      return u.astype(g.dtype), m32.astype(m.dtype), None

    u, mu, nu = _trees.tree_map_n(leaf, 3, state.mu, updates, state.nu)
    return u, ScaleByMuonState(optax.safe_increment(state.count), mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def check_muon_arguments(*, learning_rate, adam_beta_1, adam_beta_2, epsilon,
                         exclude_layers, muon_a, muon_b, muon_c, adam_lr_ratio,
                         momentum, ns_steps, rms_rate) -> None:
  """Construction-time checks of Muon's own arguments."""
  _checks.check_learning_rate(learning_rate)
  _checks.check_unit_interval("adam_beta_1", adam_beta_1)
  _checks.check_unit_interval("adam_beta_2", adam_beta_2)
  _checks.check_non_negative("epsilon", epsilon)
  _checks.check_unit_interval("momentum", momentum)
  _checks.check_non_negative("adam_lr_ratio", adam_lr_ratio)
  for name, value in (("muon_a", muon_a), ("muon_b", muon_b),
                      ("muon_c", muon_c)):
    _checks.check_number(name, value)
    if _checks.is_concrete(value) and not math.isfinite(float(value)):
      raise ValueError(
          f"`{name}` must be a finite number. Received: {name}={value!r}")
  _checks.check_int_at_least("ns_steps", ns_steps, 0)
  if rms_rate is not None:
    _checks.check_non_negative("rms_rate", rms_rate)
  if exclude_layers is not None and (
      isinstance(exclude_layers, str)
      or not all(isinstance(s, str) for s in exclude_layers)):
    raise ValueError(
        "`exclude_layers` must be a list of strings or None. "
        f"Received: exclude_layers={exclude_layers!r}")
  _patterns.check_patterns(exclude_layers, "exclude_layers")  # RE2, linear.


def with_muon_decay(rule, lr, weight_decay, adam_weight_decay, route_args,
                     weight_decay_mask, exclude_from_weight_decay):
  """``rule`` followed by Keras Muon's decay, with ``rule``'s own state.

  ``weight_decay`` decays the Newton-Schulz leaves, ``adam_weight_decay`` the
  others, both with the full learning rate ``lr``. The rule's step ``d``
  becomes ``w - ((w - w * wd * lr) - d)``, so that the chain's final
  negation gives Keras's ``(w1 - d) - w`` to the bit (as
  :func:`~optax_suite._options.weight_decay.descend_with_weight_decay`).
  """
  if weight_decay is None and adam_weight_decay is None:
    return rule

  def update_fn(updates, state, params=None):
    _trees.check_params(params, "weight decay")
    updates, state = rule.update(updates, state, params)
    route = _route(params, *route_args)
    mask = _weight_decay.decay_mask(params, weight_decay_mask,
                                    exclude_from_weight_decay)

    def leaf(p, d, newton_schulz_leaf, flag):
      rate = weight_decay if newton_schulz_leaf else adam_weight_decay
      if d is None or flag is False or rate is None:
        return d
      dt = _numerics.compute_dtype(p.dtype)
      w = p.astype(dt)
      w1 = w - (w * rate) * lr.astype(dt)
      if flag is not True:
        w1 = jnp.where(flag, w1, w)
      return (w - (w1 - d.astype(dt))).astype(d.dtype)

    return _trees.tree_map(leaf, params, updates, route, mask), state

  return optax.GradientTransformation(rule.init, update_fn)
