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


def keras_steps(opt, variables, params, grads_seq):
  """Runs a built Keras optimizer on `grads_seq`, one jitted
  `stateless_apply` a step from its variables' values; yields, after each
  step, the parameters (a pytree like `params`, numpy leaves) and the
  optimizer variables' values (in `opt.variables`' order)."""
  treedef = jax.tree.structure(params)

  @jax.jit
  def step(opt_vars, train_vars, grads):
    return opt.stateless_apply(opt_vars, grads, train_vars)

  train_vars = [v.value for v in variables]
  opt_vars = [v.value for v in opt.variables]
  for grads in grads_seq:
    train_vars, opt_vars = step(opt_vars, train_vars, jax.tree.leaves(grads))
    yield (jax.tree.unflatten(treedef, [np.asarray(v) for v in train_vars]),
           opt_vars)


def keras_trajectory(kind_or_optimizer, params, grads_seq, exclude=None,
                     **kwargs):
  """Parameters (as pytrees like `params`) after each Keras step."""
  opt, variables = build_keras(kind_or_optimizer, params, exclude, **kwargs)
  out, opt_vars = [], [v.value for v in opt.variables]
  for step_params, step_vars in keras_steps(opt, variables, params,
                                           grads_seq):
    out.append(step_params)
    opt_vars = step_vars
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


def make_params(seed=0, dtype=np.float32, rank3=True):
  """A pytree of leaves of ranks 0, 1, 2, 3 and 4 (no rank 3 if not rank3)."""
  rng = np.random.default_rng(seed)
  params = {
      "dense": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), dtype),
                "bias": jnp.asarray(rng.normal(size=(3,)), dtype)},
      "conv": {"kernel": jnp.asarray(rng.normal(size=(2, 2, 3, 2)), dtype)},
      "scale": jnp.asarray(rng.normal(size=()), dtype),
  }
  # Drawn last so that the leaves above keep their values. Ranks 0 to 4:
  # every path of the factored rules (Adafactor, Muon) runs.
  if rank3:
    params["heads"] = {"kernel": jnp.asarray(rng.normal(size=(2, 3, 5)),
                                             dtype)}
  return params


# Parity tolerance, shared by every module that compares with Keras.
#
# The unit is one float32 ulp of a leaf's largest |value| (taken >= 1.0, so a
# leaf whose values all sit near 0 is not held to subnormal spacing).
#
# ULPS (Keras's numbers): both sides compute the same float32 formulas; XLA
# compiles the two programs separately and may fuse, reorder or contract
# (a * b + c) their ops differently, so an update `u` can differ by a rounding
# or two of |u|. What is stored is `p - u` rounded to float32: a difference
# in `u` far below ulp(p) moves the stored parameter by at most one rounding,
# 1 ulp of |p| <= 1 unit. It does not compound: moments, EMAs and clipped
# gradients carry an earlier difference with weight < 1, and the parameters
# feed back into the update only through weight decay (lr * wd << 1). So 1
# unit per step, not growing with the step count, for rules whose update does
# not feed on the parameters. Rules that read the weights (Ftrl, Lamb's trust
# ratio, Schedule-Free's interpolation point, decay before the step) or carry
# a velocity with the learning rate inside it (SGD) feed a one-unit
# difference back into later updates: measured up to 3 units (Schedule-Free
# under a warmup schedule, SGD resumed from Keras) with 14 optimizers. We
# allow 4. The terminal summary prints the largest seen per module.
ULPS = 4
# ULPS_INJECTED (hyperparameters injected with `optax.inject_hyperparams`):
# they are float32 arrays, so `1 - beta_1`, `beta_1 ** t` and the like are
# rounded from the float32 value rather than from the Python float, a
# relative error of up to 1 ulp in every update. Such errors of the updates
# do add up over a run, step after step (about eps * |u| per step, |u| <=
# lr): measured up to 8 units over 27 steps; allowed twice that.
ULPS_INJECTED = 16
# A deviation no rounding explains: the controls (a run that must NOT match
# Keras) must be further off than this.
FAR = 1e-4

# Largest deviation seen per test module and tolerance, for the terminal
# summary: (module, ulps allowed) -> (absolute deviation, units, test id).
DEVIATIONS: dict = {}


def _unit(x):
  """One ulp of the leaf's largest magnitude (of at least 1.0), float32."""
  scale = np.max(np.abs(x[np.isfinite(x)]), initial=1.0)
  return float(np.spacing(np.float32(max(scale, 1.0))))


def _record(dev, units, ulps):
  test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
  key = (test.split("::")[0].rsplit("/", 1)[-1], ulps)
  if dev >= DEVIATIONS.get(key, (-1.0,))[0]:
    DEVIATIONS[key] = (dev, units, test)


def assert_trajectories_match(expected, actual, steps=None, first_step=0,
                              ulps=ULPS):
  """Every leaf of every step agrees to `ulps` units; NaN where Keras has NaN.

  `expected`/`actual`: sequences of pytrees (Keras's and ours) of equal
  length (`steps`, when given); `first_step` numbers the steps in messages.
  Pass `ulps=ULPS_INJECTED` where hyperparameters are injected. Records the
  largest deviation seen for the terminal summary, and returns it.
  """
  assert len(expected) == len(actual), (len(expected), len(actual))
  if steps is not None:
    assert len(actual) == steps, (len(actual), steps)
  worst = worst_units = 0.0
  for step, (e, a) in enumerate(zip(expected, actual), start=first_step):
    e_leaves, a_leaves = jax.tree.leaves(e), jax.tree.leaves(a)
    assert len(e_leaves) == len(a_leaves)
    for x, y in zip(e_leaves, a_leaves):
      x = np.asarray(x, np.float64)
      y = np.asarray(y, np.float64)
      assert x.shape == y.shape, (step, x.shape, y.shape)
      np.testing.assert_array_equal(np.isnan(x), np.isnan(y),
                                    err_msg=f"NaNs differ at step {step}")
      unit = _unit(x)
      diff = np.where(np.isnan(x) | (x == y), 0.0, np.abs(x - y))
      dev = float(np.max(diff, initial=0.0))
      worst = max(worst, dev)
      worst_units = max(worst_units, dev / unit)
      if dev > ulps * unit:
        _record(worst, worst_units, ulps)
        raise AssertionError(
            f"step {step}: deviation {dev:.3g} = {dev / unit:.2f} ulps "
            f"> {ulps} ulps ({ulps * unit:.3g})\nKeras: {x}\nours:  {y}")
  _record(worst, worst_units, ulps)
  return worst


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
