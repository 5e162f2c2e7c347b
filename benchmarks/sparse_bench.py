"""Lazy row updates against dense steps on an embedding table, side by side.

An Adam or Adamax step on a float32 table of ROWS x 64 whose gradient
touches 4,096 rows (ids drawn with repeats), jitted with the table and the
optimizer state donated:

  lazy    optax_suite.<opt>(lazy_rows=True) through ``ox.apply`` on the BCOO
          gradient: reads and writes the touched rows of table and slots.
  optax   optax.<opt> on the dense gradient (what ``jax.grad`` of a lookup
          gives), with ``optax.apply_updates``.
  keras   keras.optimizers.<Opt>.stateless_apply under jax.jit on the BCOO
          gradient. Keras's jitted BCOO path cannot sum repeated rows (it
          needs a static nse), so Keras gets the BCOO with its rows already
          summed (``unique_indices=True``), a small head start.

Contenders of one row are timed in interleaved rounds and each figure is the
median per-call time over the rounds (the machine is shared: interleaving
lets outside load hit them alike). The order of
``--contenders`` matters for the lazy step at 1M-4M rows: measured right
after Keras's step (which allocates and frees a table-sized temporary on
every call) it took 28-83 ms in some rows, after optax's dense step or in a
process of its own 4-7 ms; see SPARSE_RESULTS.md. Compile time and
``compiled.memory_analysis()`` (peak = arguments + outputs - aliased +
temporaries; temp = XLA's scratch) come from the same compiled step. Page
faults per call are the process's minor faults (``getrusage``) over each
contender's calls, median over rounds: memory the step touches that the
kernel maps afresh.

Usage:
  python benchmarks/sparse_bench.py --rows 100k,1M,4M --opts adam,adamax
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.experimental import sparse  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import optax_suite as ox  # noqa: E402
from bench import Runner  # noqa: E402

DIM, NNZ, LR = 64, 4096, 1e-3


def parse_rows(text):
  text = text.upper()
  mult = {"K": 10**3, "M": 10**6}.get(text[-1], 1)
  return int(float(text.rstrip("KM")) * mult)


def make_ids(rows, rng):
  """4,096 ids, about an eighth of them repeats of others."""
  ids = rng.integers(0, rows, size=NNZ)
  ids[NNZ - NNZ // 8:] = ids[:NNZ // 8]
  return rng.permutation(ids).astype(np.int32)


def lazy(opt_name, rows):
  opt = getattr(ox, opt_name)(learning_rate=LR, lazy_rows=True)

  def step(params, state, grads):
    return ox.apply(opt, grads["bcoo"], state, params)

  return opt.init, step


def dense_optax(opt_name, rows):
  opt = {"adam": optax.adam(LR, eps=1e-7),
         "adamax": optax.adamax(LR, eps=1e-7)}[opt_name]

  def step(params, state, grads):
    updates, state = opt.update(grads["dense"], state, params)
    return optax.apply_updates(params, updates), state

  return opt.init, step


def keras_contender(opt_name, rows):
  import keras  # Imported late: only this contender needs it.
  opt = getattr(keras.optimizers, {"adam": "Adam", "adamax": "Adamax"}[
      opt_name])(learning_rate=LR)

  def init(params):
    opt.build([keras.Variable(np.zeros(params.shape, np.float32),
                              name="table")])
    return [jnp.asarray(v.value) for v in opt.variables]

  def step(params, state, grads):
    new, state = opt.stateless_apply(state, [grads["unique"]], [params])
    return new[0], state

  return init, step


CONTENDERS = {"lazy": lazy, "optax": dense_optax, "keras": keras_contender}


def grads_for(rows, seed=0):
  rng = np.random.default_rng(seed)
  ids = make_ids(rows, rng)
  data = (0.01 * rng.standard_normal((NNZ, DIM))).astype(np.float32)
  bcoo = sparse.BCOO((jnp.asarray(data), jnp.asarray(ids[:, None])),
                     shape=(rows, DIM))
  dense = bcoo.todense()
  uniq = sparse.bcoo_sum_duplicates(bcoo, nse=len(np.unique(ids)))
  uniq = sparse.BCOO((uniq.data, uniq.indices), shape=(rows, DIM),
                     unique_indices=True, indices_sorted=True)
  return {"bcoo": bcoo, "dense": dense, "unique": uniq}


def bench_rows(opt_name, rows, contenders, rounds, calls):
  rng = np.random.default_rng(1)
  table = jnp.asarray(rng.standard_normal((rows, DIM), dtype=np.float32))
  all_grads = grads_for(rows)
  runners = []
  for c in contenders:
    init, step = CONTENDERS[c](opt_name, rows)
    key = {"lazy": "bcoo", "optax": "dense", "keras": "unique"}[c]
    grads = {key: all_grads[key]}
    runners.append(Runner(c, init, step, table, grads))
  del all_grads
  for r in runners:  # Warm up.
    r.run(1)
    r.times.clear()
  faults = {r.name: [] for r in runners}
  for _ in range(rounds):
    for r in runners:
      before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
      r.run(calls)
      faults[r.name].append(
          (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls)
  return {r.name: dict(ms=1e3 * statistics.median(r.times),
                       compile_s=r.compile_s, peak_mb=r.peak_bytes / 2**20,
                       temp_mb=r.temp_bytes / 2**20,
                       faults=statistics.median(faults[r.name]))
          for r in runners}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rows", default="100k,1M,4M")
  p.add_argument("--opts", default="adam,adamax")
  p.add_argument("--contenders", default="lazy,optax,keras")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--calls", type=int, default=3)
  p.add_argument("--markdown", default=None)
  args = p.parse_args(argv)
  contenders = args.contenders.split(",")
  header = ("| rows | opt | " + " | ".join(f"{c} ms" for c in contenders)
            + " | dense/lazy | keras/lazy | compile s (" + "/".join(contenders)
            + ") | peak MB (" + "/".join(contenders) + ") | temp MB ("
            + "/".join(contenders) + ") | page faults per call ("
            + "/".join(contenders) + ") |")
  lines = [header, "|" + "---|" * (header.count("|") - 1)]
  print(header, flush=True)
  for rows_text in args.rows.split(","):
    rows = parse_rows(rows_text)
    for opt_name in args.opts.split(","):
      res = bench_rows(opt_name, rows, contenders, args.rounds, args.calls)
      ms = {c: res[c]["ms"] for c in contenders}
      ratio = lambda c: (f"{ms[c] / ms['lazy']:.0f}x" if c in ms and "lazy"
                         in ms else "-")
      line = (f"| {rows_text} | {opt_name} | "
              + " | ".join(f"{ms[c]:.3f}" for c in contenders)
              + f" | {ratio('optax')} | {ratio('keras')} | "
              + "/".join(f"{res[c]['compile_s']:.2f}" for c in contenders)
              + " | " + "/".join(f"{res[c]['peak_mb']:.0f}" for c in contenders)
              + " | " + "/".join(f"{res[c]['temp_mb']:.1f}"
                                 for c in contenders)
              + " | " + "/".join(f"{res[c]['faults']:.0f}"
                                 for c in contenders) + " |")
      lines.append(line)
      print(line, flush=True)
  if args.markdown:
    with open(args.markdown, "w") as f:
      f.write(f"<!-- python {' '.join(sys.argv)} -->\n")
      f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
