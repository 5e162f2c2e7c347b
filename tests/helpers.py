"""Helpers shared by several test modules (none is a test).

Test modules import these from here, never from one another: the 8-device
child process runner, the loss-scale trajectories and poisoned gradients,
and the embedding-table parameters with row-sparse gradients.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
from jax.experimental import sparse
import jax.numpy as jnp
import keras
import numpy as np
import optax

from keras_oracle import KERAS_CLASSES
from keras_oracle import build_keras
from keras_oracle import keras_steps
from keras_oracle import make_params
from keras_oracle import varied_grads

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Child processes on 8 host devices (JAX fixes its device count at import).


def run_child(args, *, timeout=240):
  """Runs `python *args` on 8 CPU devices from the repository root; stdout."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", KERAS_BACKEND="jax")
  proc = subprocess.run(
      [sys.executable, *args], env=env, cwd=ROOT, capture_output=True,
      text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc.stdout


# optax's `sharding_test.py` cases on an explicitly sharded mesh (sharding in
# the types): `init` eager and jitted and `update` eager and jitted must give
# states of the same types (shape, dtype and sharding), and the updates the
# gradients' type. Each case is `[name, options, wrapper]`, wrapper one of
# None, "loss_scale" or "inject".
EXPLICIT_CHILD = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, optax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import optax_suite as ox

    cases = json.loads(sys.argv[1])
    assert len(jax.devices()) == 8, jax.devices()
    mesh = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Explicit,))
    sharding = NamedSharding(mesh, P(None, "x"))
    out = []
    for name, options, wrapper, dtype in cases:
        factory = getattr(ox, name)
        if wrapper == "inject":
            factory = ox.inject_hyperparams(factory)
        opt = factory(learning_rate=0.5, **options)
        if wrapper == "loss_scale":
            opt = ox.loss_scale_optimizer(opt, initial_scale=4.0)
        typeof = lambda tree: str(jax.tree.map(jax.typeof, tree))
        try:
            with jax.set_mesh(mesh):
                params = jnp.ones((2, 8, 4), dtype=dtype,
                                  out_sharding=sharding)
                grads = params * 0.5
                s0 = opt.init(params)
                s0_jit = jax.jit(opt.init)(params)
                u1, s1 = opt.update(grads, s0, params)
                u2, s2 = jax.jit(opt.update)(grads, s0, params)
                _, s3 = jax.jit(opt.update)(grads, s2, params)
                bad = [what for what, a, b in (
                    ("init jit", s0, s0_jit), ("update", s0, s1),
                    ("update jit", s0, s2), ("second update", s0, s3),
                    ("updates", grads, u1), ("updates jit", grads, u2))
                       if typeof(a) != typeof(b)]
                out.append({"case": [name, options, wrapper, dtype],
                            "bad": bad, "updates": typeof(u2)})
        except Exception as e:
            out.append({"case": [name, options, wrapper, dtype],
                        "error": f"{type(e).__name__}: {str(e)[:400]}"})
    print("JSON" + json.dumps(out))
""")


def run_explicit_cases(cases):
  """Runs `EXPLICIT_CHILD` on `cases`; returns one result dict per case."""
  stdout = run_child(["-c", EXPLICIT_CHILD, json.dumps(cases)])
  line = [l for l in stdout.splitlines() if l.startswith("JSON")][-1]
  return json.loads(line[4:])



# Loss scaling: Keras's and our trajectories, gradients with inf/nan.


def keras_ls_trajectory(kind, params, grads_seq, initial_scale, growth, **kw):
  """Params and dynamic scale after each step of Keras's LossScaleOptimizer."""
  inner = KERAS_CLASSES[kind](**kw)
  opt = keras.optimizers.LossScaleOptimizer(
      inner, initial_scale=initial_scale, dynamic_growth_steps=growth)
  opt, variables = build_keras(opt, params)
  idx = [i for i, v in enumerate(opt.variables) if v is opt.dynamic_scale][0]
  out, scales = [], []
  for step_params, opt_vars in keras_steps(opt, variables, params, grads_seq):
    out.append(step_params)
    scales.append(float(opt_vars[idx]))
  return out, scales


def ours_ls_trajectory(opt, params, grads_seq):
  """Params and scale after each step of our optimizer, one jit for all."""
  state = opt.init(params)

  @jax.jit
  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  out, scales = [], []
  for grads in grads_seq:
    params, state = step(params, state, grads)
    out.append(jax.tree.map(np.asarray, params))
    scales.append(float(state.scale))
  return out, scales, state


def poison(grads, value, leaf_index=0):
  """`grads` with one element of one leaf set to `value` (inf or nan)."""
  leaves, treedef = jax.tree.flatten(grads)
  g = leaves[leaf_index]
  leaves[leaf_index] = g.at[(0,) * g.ndim].set(value)
  return jax.tree.unflatten(treedef, leaves)


def hostile_grads(params, steps, bad_steps, seed=0, scale=100.0):
  """Varied (scaled-looking) gradients with inf/nan at `bad_steps`."""
  seq = varied_grads(params, steps, seed=seed, scale=scale)
  for i, t in enumerate(bad_steps):
    seq[t] = poison(seq[t], np.inf if i % 2 else np.nan, leaf_index=i % 4)
  return seq



# An embedding table with row-sparse (BCOO) gradients.

ROWS, DIM = 10, 3


def table_params(seed=0):
  params = make_params(seed)
  rng = np.random.default_rng(seed + 100)
  params["embed"] = jnp.asarray(rng.normal(size=(ROWS, DIM)), jnp.float32)
  return params


def row_grads(steps, seed=0, nnz=6, rows=ROWS, all_rows=False,
              row_shape=(DIM,), crowded=False):
  """BCOO gradients of a `(rows, *row_shape)` table: ids with repeats, rows
  0 and 1 never touched (unless `all_rows`: every row once, shuffled),
  large values every 5th step. `crowded`: also one row six times every 7th
  step and exact zeros in places every 5th."""
  rng = np.random.default_rng(seed)
  out = []
  for t in range(steps):
    if all_rows:
      ids = rng.permutation(rows)
    else:
      ids = rng.integers(2, rows, size=nnz)
      ids[-1] = ids[0]  # Always one repeated row.
      if crowded and t % 7 == 3:
        ids[:] = ids[0]
    data = rng.normal(size=(len(ids),) + tuple(row_shape)) * (
        100.0 if t % 5 == 2 else 1.0)
    if crowded and t % 5 == 1:
      data = data * (rng.random(data.shape) < 0.5)
    out.append(sparse.BCOO((jnp.asarray(data, jnp.float32),
                            jnp.asarray(ids[:, None], jnp.int32)),
                           shape=(rows,) + tuple(row_shape)))
  return out


def grad_seq(params, steps, seed=0, **kw):
  dense = varied_grads(params, steps, seed=seed)
  rows = row_grads(steps, seed=seed, **kw)
  return [dict(g, embed=r) for g, r in zip(dense, rows)]
