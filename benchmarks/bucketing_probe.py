"""Does bucketing leaves into one flat buffer help when params stay a tree?

Times one jitted, donated Adam step (``update`` + ``apply_updates``) on a tree
of many small leaves three ways:

- ``per-leaf``: optax_suite as it is, state shaped like the tree;
- ``bucketed``: state kept as one flat buffer; the step concatenates the
  gradients and parameters, updates the flat buffer and splits the updates
  back into the user's tree (the user's pytree API unchanged);
- ``flat``: the user keeps the parameters themselves as one flat buffer.

Prints compile seconds and the median ms per step of each (parameters and
state donated, as in a training loop).

    python benchmarks/bucketing_probe.py --leaves 1000 --size 4000
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import optax_suite as ox


def _time(fn, args, reps):
  """Compile seconds and median ms of a step whose params and state are donated."""
  start = time.perf_counter()
  compiled = jax.jit(fn, donate_argnums=(0, 1)).lower(*args).compile()
  compile_s = time.perf_counter() - start
  params, state, grads = args
  times = []
  for _ in range(reps + 1):
    start = time.perf_counter()
    params, state = jax.block_until_ready(compiled(params, state, grads))
    times.append(time.perf_counter() - start)
  return compile_s, 1e3 * float(np.median(times[1:]))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--leaves", type=int, default=1000)
  parser.add_argument("--size", type=int, default=4000)
  parser.add_argument("--reps", type=int, default=20)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  params = {f"l{i}": jnp.asarray(rng.normal(size=(args.size,)), jnp.float32)
            for i in range(args.leaves)}
  grads = jax.tree.map(lambda p: 0.01 * p, params)
  opt = ox.adam(1e-3)
  leaves, treedef = jax.tree.flatten(params)
  bounds = np.cumsum([0] + [leaf.size for leaf in leaves])
  flat = lambda tree: jnp.concatenate([x.ravel() for x in jax.tree.leaves(tree)])

  def per_leaf(p, s, g):
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s

  def bucketed(p, s, g):
    u, s = opt.update(flat(g), s, flat(p))
    parts = [u[a:b].reshape(x.shape)
             for a, b, x in zip(bounds[:-1], bounds[1:], leaves)]
    return optax.apply_updates(p, jax.tree.unflatten(treedef, parts)), s

  fresh = lambda tree: jax.tree.map(jnp.copy, tree)  # each run donates its own
  runs = {
      "per-leaf": (per_leaf, lambda: (fresh(params), opt.init(params), grads)),
      "bucketed": (bucketed, lambda: (fresh(params), opt.init(flat(params)),
                                      grads)),
      "flat": (per_leaf, lambda: (flat(params), opt.init(flat(params)),
                                  flat(grads))),
  }
  print(f"{args.leaves} leaves x {args.size} float32, adam, "
        f"{jax.device_count()} {jax.default_backend()} device(s)")
  for name, (fn, make_args) in runs.items():
    compile_s, ms = _time(fn, make_args(), args.reps)
    print(f"{name:>9}: compile {compile_s:6.2f} s, step {ms:7.2f} ms")


if __name__ == "__main__":
  main()
