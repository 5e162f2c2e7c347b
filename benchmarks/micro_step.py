"""The fused step's micro-step as a fraction of its update step, per factory.

Every optimizer of the package at its defaults with
``gradient_accumulation_steps=4``, directly and through
``loss_scale_optimizer`` and ``multi_optimizer``, runs ``ox.apply`` jitted
with the parameters and state donated, ``step(params, state, grads) ->
(params, state)``. Each round times the 4 calls of one cycle one by one;
the figures are the medians over rounds of the micro-steps (calls 1-3) and
of the update step (call 4), and their ratio. A micro-step only adds the
gradient to the accumulator, so the ratio is far below 1 when the rule and
the parameter write are skipped; the split path (``update`` +
``apply_updates``) is timed beside it for reference.

Usage:
  python benchmarks/micro_step.py --rounds 7 --markdown out.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import optax_suite as ox  # noqa: E402
import optax_suite._factories  # noqa: E402,F401

K = 4
FACTORIES = sorted(spec.factory.__name__
                   for spec in ox._factories.REGISTRY.values())  # noqa: SLF001
WRAPPERS = {
    "direct": lambda opt: opt,
    "loss_scale": ox.loss_scale_optimizer,
    "multi": lambda opt: ox.multi_optimizer(ox.OptimizerMap(opt)),
}


def tree(layers: int, d: int):
  key = jax.random.PRNGKey(0)
  params = {}
  for i in range(layers):
    key, a, b = jax.random.split(key, 3)
    params[f"layer_{i}"] = {"kernel": jax.random.normal(a, (d, d)) * 0.02,
                            "bias": jax.random.normal(b, (d,)) * 0.02}
  return params


def time_cycle(step, params, state, grads, rounds):
  micro, update = [], []
  for _ in range(rounds):
    for call in range(K):
      t = time.perf_counter()
      params, state = step(params, state, grads)
      jax.block_until_ready((params, state))
      (update if call == K - 1 else micro).append(time.perf_counter() - t)
  return statistics.median(micro), statistics.median(update)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--layers", type=int, default=8)
  parser.add_argument("--d", type=int, default=512)
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--opts", default=",".join(FACTORIES))
  parser.add_argument("--markdown", default=None)
  args = parser.parse_args()
  params0 = tree(args.layers, args.d)
  grads = jax.tree.map(lambda p: jnp.cos(p) * 0.1, params0)
  n = sum(x.size for x in jax.tree.leaves(params0))
  lines = [f"{args.layers} layers of ({args.d},{args.d}) + ({args.d},): "
           f"{n / 1e6:.2f}M parameters, float32, k={K}, median of "
           f"{args.rounds} rounds (ms per call)", "",
           "| optimizer | wrapper | fused micro | fused update | micro/update"
           " | split micro | split micro/fused micro |",
           "|---|---|---|---|---|---|---|"]
  print("\n".join(lines))
  for name in args.opts.split(","):
    for wname, wrap in WRAPPERS.items():
      opt = wrap(getattr(ox, name)(gradient_accumulation_steps=K))
      fused = jax.jit(lambda p, s, g, opt=opt: ox.apply(opt, g, s, p),
                      donate_argnums=(0, 1))

      def split_fn(p, s, g, opt=opt):
        u, s = opt.update(g, s, p)
        return ox.apply_updates(p, u, s), s
      split = jax.jit(split_fn, donate_argnums=(0, 1))
      out = {}
      for label, step in (("fused", fused), ("split", split)):
        params = jax.tree.map(jnp.copy, params0)
        state = opt.init(params)
        for _ in range(K):  # compile and warm up one cycle
          params, state = step(params, state, grads)
        out[label] = time_cycle(step, params, state, grads, args.rounds)
      (fm, fu), (sm, _) = out["fused"], out["split"]
      line = (f"| {name} | {wname} | {fm * 1e3:.2f} | {fu * 1e3:.2f} | "
              f"{fm / fu:.2f} | {sm * 1e3:.2f} | {sm / fm:.1f}x |")
      print(line, flush=True)
      lines.append(line)
  if args.markdown:
    with open(args.markdown, "w") as f:
      f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
