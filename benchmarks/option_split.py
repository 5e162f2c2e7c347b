"""Splits a `clip_wd` row of bench.py into its two options.

Times one donated step of ours and of Keras 3's `stateless_apply` for the
configs `plain`, `wd` (weight_decay=1e-4 alone), `clip` (global_clipnorm=1.0
alone) and `clip_wd` (both), in interleaved rounds (median of the rounds'
mean call time), and prints each compiled step of ours' temporary bytes and
the number of fusions in its entry computation. It shows which option a
`clip_wd` miss comes from.

Usage:
  python benchmarks/option_split.py --tree 40x32M --opts lamb,ftrl,adafactor,adam
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax

import bench
import hlo_probe

SPLIT = {"plain": {}, "wd": {"weight_decay": 1e-4},
         "clip": {"global_clipnorm": 1.0},
         "clip_wd": {"global_clipnorm": 1.0, "weight_decay": 1e-4}}


def prepared(maker, opt_name, cfg, params, grads):
  init, step = maker(opt_name, cfg)
  jitted = jax.jit(step, donate_argnums=(0, 1))
  p = jax.tree.map(lambda x: x.copy(), params)
  s = init(p)
  compiled = jitted.lower(p, s, grads).compile()
  p, s = compiled(p, s, grads)
  jax.block_until_ready(p)
  return {"compiled": compiled, "p": p, "s": s, "times": []}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--tree", default="40x32M")
  ap.add_argument("--opts", default="lamb,ftrl,adafactor,adam")
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--calls", type=int, default=3)
  args = ap.parse_args(argv)
  leaves, size = args.tree.split("x")
  params = bench.make_tree(int(leaves), bench.parse_size(size))
  grads = bench.make_tree(int(leaves), bench.parse_size(size), seed=1)
  for opt_name in args.opts.split(","):
    rows = {}
    for cfg_name, cfg in SPLIT.items():
      for who in ("ours", "keras"):
        rows[(cfg_name, who)] = prepared(
            bench.CONTENDERS[who], opt_name, cfg, params, grads)
    for _ in range(args.rounds):
      for row in rows.values():
        t0 = time.perf_counter()
        for _ in range(args.calls):
          row["p"], row["s"] = row["compiled"](row["p"], row["s"], grads)
        jax.block_until_ready(row["p"])
        row["times"].append((time.perf_counter() - t0) / args.calls)
    print(f"\n{args.tree} {opt_name}")
    for cfg_name in SPLIT:
      ours, keras = rows[(cfg_name, "ours")], rows[(cfg_name, "keras")]
      o = statistics.median(ours["times"]) * 1e3
      k = statistics.median(keras["times"]) * 1e3
      mem = ours["compiled"].memory_analysis()
      fusions = hlo_probe.entry_ops(ours["compiled"].as_text())["fusion"]
      print(f"  {cfg_name:8s} ours {o:8.2f} ms  keras {k:8.2f} ms  "
            f"ours/keras {o / k:5.2f}  ours temp "
            f"{mem.temp_size_in_bytes / 2**20:7.1f} MB  fusions {fusions}")
      for row in (ours, keras):
        del row["compiled"], row["p"], row["s"]


if __name__ == "__main__":
  main()
