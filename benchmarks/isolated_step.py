"""One optimizer step of ours against Keras's, each compiled and timed alone.

A cross-check for single rows of ``bench.py``: builds the same optimizer in
optax_suite and in Keras 3 (``stateless_apply``), compiles each step with
its parameters and state donated, prints the number of fusions and the temp
bytes of each compiled step, then times them one after the other (median of
``--reps`` calls).

    KERAS_BACKEND=jax python benchmarks/isolated_step.py rmsprop \
        "dict(global_clipnorm=1.0, weight_decay=1e-4)" --leaves 8 --size 1048576
"""

import argparse
import ast
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import optax_suite as ox  # noqa: E402

KERAS = {"adam": keras.optimizers.Adam, "adamax": keras.optimizers.Adamax,
         "adadelta": keras.optimizers.Adadelta,
         "rmsprop": keras.optimizers.RMSprop}


def _median_ms(compiled, make_args, reps):
  times = []
  for _ in range(reps):
    args = jax.block_until_ready(make_args())
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("opt", choices=sorted(KERAS))
  parser.add_argument("kwargs", nargs="?", default="dict()",
                      help="a dict(...) of keyword arguments")
  parser.add_argument("--leaves", type=int, default=8)
  parser.add_argument("--size", type=int, default=1 << 20)
  parser.add_argument("--reps", type=int, default=15)
  args = parser.parse_args()
  kwargs = eval(args.kwargs, {"dict": dict})  # pylint: disable=eval-used
  params = [jnp.full((args.size,), 0.5) for _ in range(args.leaves)]
  grads = [jnp.full((args.size,), 0.01) for _ in range(args.leaves)]

  opt = getattr(ox, args.opt)(**kwargs)
  state = opt.init(params)

  def ours(p, s, g):
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s

  kopt = KERAS[args.opt](**kwargs)
  variables = [keras.Variable(np.asarray(p)) for p in params]
  kopt.build(variables)
  kvars = [v.value for v in kopt.variables]
  ours_c = jax.jit(ours, donate_argnums=(0, 1)).lower(
      params, state, grads).compile()
  keras_c = jax.jit(lambda o, g, t: kopt.stateless_apply(o, g, t),
                    donate_argnums=(0, 2)).lower(kvars, grads, params).compile()
  copy = lambda tree: jax.tree.map(jnp.copy, tree)
  print(f"{args.opt} {kwargs}, {args.leaves} leaves x {args.size}")
  for name, compiled, make_args in (
      ("ours", ours_c, lambda: (copy(params), copy(state), grads)),
      ("keras", keras_c, lambda: (copy(kvars), grads, copy(params)))):
    text = compiled.as_text()
    temp_mb = compiled.memory_analysis().temp_size_in_bytes / 2**20
    ms = _median_ms(compiled, make_args, args.reps)
    print(f"{name:>6}: {ms:8.2f} ms, {text.count(' fusion('):3d} fusions, "
          f"temp {temp_mb:.1f} MB")


if __name__ == "__main__":
  main()
