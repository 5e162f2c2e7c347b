"""Where a many-small-leaves step spends its time: the compiled programs.

Compiles one donated step of ours and of the nearest optax chain (the
contenders of ``bench.py``) on a tree of many small leaves and prints, for
each: the top-level instructions of the compiled entry computation by opcode
(each is a kernel launch or a buffer operation on XLA:CPU), the fusions per
leaf, parameter-sized copies, temporary bytes from ``memory_analysis()``, and
the median over interleaved rounds of the mean time of a call (12 calls
with live, donated arguments: three accumulation cycles of ``ema_acc``),
and the median and range of the per-round ratio ours/optax.

Usage:
  python benchmarks/hlo_probe.py --leaves 1000 --size 1M --opts adamax \
      --configs clip_wd
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import time

import jax

import bench


def entry_ops(hlo_text: str) -> collections.Counter:
  """Opcodes of the top-level instructions of the ENTRY computation."""
  ops = collections.Counter()
  in_entry = False
  for line in hlo_text.splitlines():
    if line.startswith("ENTRY"):
      in_entry = True
      continue
    if in_entry:
      if line.startswith("}"):
        break
      m = re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = [^ ]+(?: [^ ]+)*? ([a-z\-]+)\(",
                   line)
      if m:
        ops[m.group(1)] += 1
  return ops


def compile_step(maker, opt_name, cfg, params, grads):
  init, step = maker(opt_name, cfg)
  state = init(params)
  jitted = jax.jit(step, donate_argnums=(0, 1))
  t0 = time.perf_counter()
  compiled = jitted.lower(params, state, grads).compile()
  return compiled, time.perf_counter() - t0, init


class Live:
  """A compiled step with its live, donated arguments (as in bench.Runner):
  no copy or re-initialization between timed calls."""

  def __init__(self, compiled, init, params, grads):
    self.compiled, self.grads = compiled, grads
    self.p = jax.tree.map(lambda x: x.copy(), params)
    self.s = init(self.p)
    self.p, self.s = compiled(self.p, self.s, grads)  # Warm up.
    jax.block_until_ready(self.p)

  def time_calls(self, calls):
    """Mean time of `calls` consecutive calls (a multiple of 4 covers whole
    accumulation cycles of the `ema_acc` config)."""
    t0 = time.perf_counter()
    for _ in range(calls):
      self.p, self.s = self.compiled(self.p, self.s, self.grads)
    jax.block_until_ready(self.p)
    return (time.perf_counter() - t0) / calls


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--leaves", type=int, default=1000)
  ap.add_argument("--size", default="1M")
  ap.add_argument("--opts", default="adamax")
  ap.add_argument("--configs", default="clip_wd")
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--calls", type=int, default=12)
  args = ap.parse_args(argv)
  params = bench.make_tree(args.leaves, bench.parse_size(args.size))
  grads = bench.make_tree(args.leaves, bench.parse_size(args.size), seed=1)
  for opt_name in args.opts.split(","):
    if opt_name in bench.NO_OPTAX_PEER:
      print(f"\n{opt_name}: no optax peer (see bench.py), skipped")
      continue
    for cfg_name in args.configs.split(","):
      cfg = bench.CONFIGS[cfg_name]
      rows = {}
      for who in ("ours", "optax"):
        compiled, secs, init = compile_step(
            bench.CONTENDERS[who], opt_name, cfg, params, grads)
        ops = entry_ops(compiled.as_text())
        mem = compiled.memory_analysis()
        rows[who] = dict(live=Live(compiled, init, params, grads), secs=secs,
                         ops=ops, temp=mem.temp_size_in_bytes, times=[])
      for _ in range(args.rounds):
        for who, row in rows.items():
          row["times"].append(row["live"].time_calls(args.calls))
      ratios = [a / b for a, b in zip(rows["ours"]["times"],
                                      rows["optax"]["times"])]
      print(f"\n{args.leaves} leaves, {args.size}, {opt_name} {cfg_name}: "
            f"ours/optax median {statistics.median(ratios):.2f}x, rounds "
            f"{min(ratios):.2f}-{max(ratios):.2f}x")
      for who, row in rows.items():
        ops = row["ops"]
        launches = sum(n for op, n in ops.items()
                       if op not in ("parameter", "tuple",
                                     "get-tuple-element", "constant",
                                     "bitcast"))
        ms = statistics.median(row["times"]) * 1e3
        print(f"  {who:6s} {ms:7.2f} ms  compile {row['secs']:5.1f} s  "
              f"kernels {launches} ({launches / args.leaves:.2f}/leaf)  "
              f"fusions {ops['fusion']}  copies {ops['copy']}  "
              f"temp {row['temp'] / 2**20:.2f} MB")
        others = {k: v for k, v in ops.items() if k not in (
            "fusion", "copy", "parameter", "tuple", "get-tuple-element",
            "constant", "bitcast")}
        print(f"         other top-level ops: {dict(others)}")


if __name__ == "__main__":
  main()
