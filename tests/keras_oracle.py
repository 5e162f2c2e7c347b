"""Runs Keras 3 (JAX backend) on a sequence of gradients: the tests' oracle.

Keras is the reference for every number in this package. The oracle builds a
Keras optimizer on `keras.Variable`s shaped like a pytree's leaves and feeds
it gradients through `stateless_apply` under `jax.jit`, recording the
parameters after every step.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from catalog import CATALOG  # noqa: E402

KERAS_CLASSES = {
    kind: getattr(keras.optimizers, entry.keras_class)
    for kind, entry in CATALOG.items()
}


def leaf_names(tree):
  """Keras variable names for the leaves: the last key of each path."""
  names = []
  for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
    key = path[-1]
    names.append(str(getattr(key, "key", getattr(key, "name", key))))
  return names


def build_keras(kind_or_optimizer, params, exclude=None, **kwargs):
  """A built Keras optimizer and its variables for the leaves of `params`."""
  if isinstance(kind_or_optimizer, str):
    opt = KERAS_CLASSES[kind_or_optimizer](**kwargs)
  else:
    opt = kind_or_optimizer
  leaves = jax.tree.leaves(params)
  variables = [
      keras.Variable(np.asarray(p), name=n, dtype=str(np.asarray(p).dtype))
      for p, n in zip(leaves, leaf_names(params))
  ]
  if exclude:
    opt.exclude_from_weight_decay(var_names=exclude)
  opt.build(variables)
  return opt, variables


def keras_trajectory(kind_or_optimizer, params, grads_seq, exclude=None,
                     **kwargs):
  """Parameters (as pytrees like `params`) after each Keras step."""
  opt, variables = build_keras(kind_or_optimizer, params, exclude, **kwargs)
  treedef = jax.tree.structure(params)

  @jax.jit
  def step(opt_vars, train_vars, grads):
    return opt.stateless_apply(opt_vars, grads, train_vars)

  train_vars = [v.value for v in variables]
  opt_vars = [v.value for v in opt.variables]
  out = []
  for grads in grads_seq:
    train_vars, opt_vars = step(opt_vars, train_vars, jax.tree.leaves(grads))
    out.append(jax.tree.unflatten(treedef, [np.asarray(v) for v in train_vars]))
  return out, (opt, opt_vars)


def ours_trajectory(opt, params, grads_seq):
  """Parameters after each step of an optax_suite optimizer under jit."""
  state = opt.init(params)

  @jax.jit
  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  out = []
  for grads in grads_seq:
    params, state = step(params, state, grads)
    out.append(jax.tree.map(np.asarray, params))
  return out, state


def varied_grads(params, steps, seed=0, scale=1.0):
  """Gradients with zeros, large values and mixed signs, step by step."""
  rng = np.random.default_rng(seed)
  seq = []
  for t in range(steps):
    def leaf(p, t=t):
      shape = np.shape(p)
      g = rng.normal(size=shape) * scale
      kind = t % 5
      if kind == 1:
        g = g * (rng.random(shape) < 0.5)  # exact zeros in places
      elif kind == 2:
        g = g * 100.0  # large values
      elif kind == 3:
        g = np.zeros(shape)  # a whole zero gradient
      elif kind == 4:
        g = -np.abs(g) * 0.01  # one sign, small
      return jnp.asarray(g, dtype=np.asarray(p).dtype)
    seq.append(jax.tree.map(leaf, params))
  return seq


def make_params(seed=0, dtype=np.float32):
  """A pytree of leaves of ranks 0, 1, 2, 3 and 4."""
  rng = np.random.default_rng(seed)
  params = {
      "dense": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), dtype),
                "bias": jnp.asarray(rng.normal(size=(3,)), dtype)},
      "conv": {"kernel": jnp.asarray(rng.normal(size=(2, 2, 3, 2)), dtype)},
      "scale": jnp.asarray(rng.normal(size=()), dtype),
  }
  # Drawn last so that the leaves above keep their values. Ranks 0 to 4:
  # every path of the factored rules (Adafactor, Muon) runs.
  params["heads"] = {"kernel": jnp.asarray(rng.normal(size=(2, 3, 5)), dtype)}
  return params


def max_deviation(a_seq, b_seq):
  """The largest |a - b| over every step and leaf."""
  worst = 0.0
  for a, b in zip(a_seq, b_seq):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      x = np.asarray(x, np.float64)
      y = np.asarray(y, np.float64)
      both_nan = np.isnan(x) & np.isnan(y)
      diff = np.where(both_nan, 0.0, np.abs(x - y))
      worst = max(worst, float(np.max(diff, initial=0.0)))
  return worst
