"""Times optax_suite against the nearest optax chain and Keras 3, side by side.

Every contender runs the optimizer step alone (gradients are an input), jitted
with the parameters and the optimizer state donated, in the same process. The
contenders of one row are timed in interleaved rounds (A B C bw, A B C bw,
...) and each figure is the median over rounds of the per-call time, so that
load from other processes hits them alike.

Contenders:
  ours   optax_suite.<opt>(...), update + optax.apply_updates
  fused  the same optimizer through optax_suite.apply (the fused step; on
         an accumulation micro-step it writes no parameter)
  optax  the nearest optax chain: [clip_by_global_norm] + scale_by_<rule> +
         [add_decayed_weights] + scale_by_learning_rate, wrapped in
         optax.MultiSteps for accumulation, plus a hand-written parameter EMA
         with overwrite. For adafactor the rule is optax.adafactor's chain
         (factored RMS, block-RMS clip, parameter scale); ftrl has no optax
         counterpart and is compared with Keras only.
  keras  keras.optimizers.<Opt>(...).stateless_apply under jax.jit
         (KERAS_BACKEND=jax).
  bw     a jitted elementwise kernel `a * s + b` over one flat float32 buffer
         of the tree's size, giving the bandwidth this machine reaches in the
         same run; "floor" is the bytes a step must move (see `floor_bytes`)
         over that bandwidth.

Usage:
  python benchmarks/bench.py --quick
  python benchmarks/bench.py --trees 40x4M,1000x4M --opts adam,rmsprop \
      --configs plain,clip_wd,ema_acc --rounds 7 --markdown out.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import optax_suite as ox  # noqa: E402

K_ACC = 4  # gradient_accumulation_steps in the ema_acc config.
LR = 1e-3

CONFIGS = {
    "plain": {},
    "clip_wd": {"global_clipnorm": 1.0, "weight_decay": 1e-4},
    "ema_acc": {"use_ema": True, "ema_overwrite_frequency": 10,
                "gradient_accumulation_steps": K_ACC},
    # Not in the grid; used for the micro-step figure without EMA.
    "acc": {"gradient_accumulation_steps": K_ACC},
    # Each clip alone (issue 19): the global norm, and the per-leaf norm.
    "gclip": {"global_clipnorm": 1.0},
    "clipnorm": {"clipnorm": 1.0},
}
# Full-size slots per parameter (Adafactor: 0, its matrices keep r and c).
SLOTS = {"adam": 2, "adamax": 2, "adadelta": 2, "rmsprop": 1, "sgd": 1,
         "adamw": 2, "lion": 1, "schedule_free_adamw": 2,
         "muon": 1, "adagrad": 1, "nadam": 2, "lamb": 2, "ftrl": 2,
         "adafactor": 0}
KERAS_NAMES = {"adam": "Adam", "adamax": "Adamax", "adadelta": "Adadelta",
               "rmsprop": "RMSprop", "sgd": "SGD", "adamw": "AdamW",
               "lion": "Lion", "schedule_free_adamw": "ScheduleFreeAdamW",
               "muon": "Muon", "adagrad": "Adagrad", "nadam": "Nadam",
               "lamb": "Lamb", "ftrl": "Ftrl", "adafactor": "Adafactor"}
# Muon: one slot (momentum) on the 2-D kernels that hold most numbers (two,
# Adam's, on the vectors); its floor ignores the Newton-Schulz matmuls.
# Weight decay an optimizer applies when a config sets none (Keras's AdamW
# default); the optax chain gets it too, so both do the same work.
DEFAULT_WEIGHT_DECAY = {"adamw": 0.004}
# Own arguments every contender gets (SGD is timed with momentum, as used).
OWN_ARGS = {"sgd": {"momentum": 0.9}}
# Optimizers optax has no counterpart of: their rows compare with Keras only.
NO_OPTAX_PEER = ("ftrl",)


# ----------------------------------------------------------------------------
# Pytrees.


def parse_size(text: str) -> int:
  text = text.upper()
  mult = {"K": 10**3, "M": 2**20}.get(text[-1], 1)
  return int(float(text.rstrip("KM")) * mult)


def make_tree(leaves: int, size: int, seed: int = 0):
  """A dict of `leaves` float32 arrays holding `size` numbers in all.

  40 leaves: ten layers of a 2-D kernel (most of the numbers) plus a bias and
  a norm's scale and offset, like a small MLP. Otherwise: `leaves` equal
  vectors, the many-small-leaves case.
  """
  rng = np.random.default_rng(seed)
  shapes = {}
  if leaves == 40:
    width = 512
    small = 3 * width
    rows = max(1, (size // 10 - small) // width)
    for i in range(10):
      shapes[f"layer_{i:02d}"] = {
          "kernel": (rows, width), "bias": (width,),
          "norm_scale": (width,), "norm_offset": (width,)}
  else:
    each = max(1, size // leaves)
    shapes = {f"leaf_{i:04d}": (each,) for i in range(leaves)}
  make = lambda s: jnp.asarray(rng.standard_normal(s, dtype=np.float32))
  return jax.tree.map(make, shapes, is_leaf=lambda x: isinstance(x, tuple))


def tree_size(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# ----------------------------------------------------------------------------
# Contenders: each returns (init(params) -> state, step(params, state, grads)).


def ours(opt_name, cfg):
  opt = getattr(ox, opt_name)(learning_rate=LR, **OWN_ARGS.get(opt_name, {}),
                              **cfg)

  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return opt.init, step


def fused(opt_name, cfg):
  """ours through the fused step ``ox.apply`` (no zeros on micro-steps)."""
  opt = getattr(ox, opt_name)(learning_rate=LR, **cfg)

  def step(params, state, grads):
    return ox.apply(opt, grads, state, params)

  return opt.init, step


def optax_rule(opt_name):
  if opt_name in ("adam", "adamw"):
    return optax.scale_by_adam(0.9, 0.999, eps=1e-7)
  if opt_name == "lion":
    return optax.scale_by_lion(0.9, 0.99)
  if opt_name == "adamax":
    return optax.scale_by_adamax(0.9, 0.999, eps=1e-7)
  if opt_name == "adadelta":
    return optax.scale_by_adadelta(rho=0.95, eps=1e-7)
  if opt_name == "sgd":  # optax.sgd's momentum: a trace outside the lr.
    return optax.trace(decay=OWN_ARGS["sgd"]["momentum"])
  if opt_name == "muon":  # Its own lr of -1: the step up the gradient.
    return optax.contrib.muon(learning_rate=-1.0, eps=1e-7)
  if opt_name == "adagrad":
    return optax.scale_by_rss(initial_accumulator_value=0.1, eps=1e-7)
  if opt_name == "nadam":  # optax's nadam: Nesterov Adam, no schedule.
    return optax.scale_by_adam(0.9, 0.999, eps=1e-7, nesterov=True)
  if opt_name == "lamb":  # optax.lamb's parts; its decay goes in between.
    return optax.scale_by_adam(0.9, 0.999, eps=1e-7)
  if opt_name == "adafactor":  # optax.adafactor's chain, before its lr.
    return optax.chain(optax.scale_by_factored_rms(),
                       optax.clip_by_block_rms(1.0),
                       optax.scale_by_param_block_rms())
  return optax.scale_by_rms(decay=0.9, eps=1e-7, initial_scale=0.0)


def clip_each_leaf(max_norm):
  """Keras's `clipnorm` from optax's parts: `optax.clip_by_global_norm` run
  on every leaf alone (optax has no per-leaf L2 clip of its own)."""
  clip = optax.clip_by_global_norm(max_norm)

  def update(updates, state, params=None):
    del params
    return jax.tree.map(
        lambda g: clip.update(g, optax.EmptyState())[0], updates), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def nearest_optax(opt_name, cfg):
  parts = []
  if cfg.get("global_clipnorm") is not None:
    parts.append(optax.clip_by_global_norm(cfg["global_clipnorm"]))
  if cfg.get("clipnorm") is not None:
    parts.append(clip_each_leaf(cfg["clipnorm"]))
  weight_decay = cfg.get("weight_decay", DEFAULT_WEIGHT_DECAY.get(opt_name))
  if opt_name == "schedule_free_adamw":  # optax's alias: rule, decay and lr.
    parts.append(optax.contrib.schedule_free_adamw(
        LR, warmup_steps=0, b1=0.9, b2=0.999, eps=1e-8,
        weight_decay=weight_decay or 0.0))
  else:
    parts.append(optax_rule(opt_name))
    if weight_decay is not None:
      parts.append(optax.add_decayed_weights(weight_decay))
    if opt_name == "lamb":  # optax.lamb's parts: its decay goes in between.
      parts.append(optax.scale_by_trust_ratio())
    parts.append(optax.scale_by_learning_rate(LR))
  tx = optax.chain(*parts)
  if cfg.get("gradient_accumulation_steps"):
    tx = optax.MultiSteps(tx, cfg["gradient_accumulation_steps"])
  use_ema = cfg.get("use_ema", False)
  momentum, freq = 0.99, cfg.get("ema_overwrite_frequency")

  def init(params):
    ema = jax.tree.map(jnp.copy, params) if use_ema else None
    return tx.init(params), ema, jnp.zeros([], jnp.int32)

  def step(params, state, grads):
    opt_state, ema, count = state
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    if use_ema:  # The parameter EMA a user writes by hand, with overwrite.
      m = jnp.where(count == 0, 0.0, momentum)
      ema = jax.tree.map(lambda e, p: m * e + (1 - m) * p, ema, params)
      if freq:
        swap = (count + 1) % freq == 0
        params = jax.tree.map(lambda e, p: jnp.where(swap, e, p), ema, params)
    return params, (opt_state, ema, count + 1)

  return init, step


def keras_contender(opt_name, cfg):
  import keras  # Imported late: only this contender needs it.
  cls = getattr(keras.optimizers, KERAS_NAMES[opt_name])
  opt = cls(learning_rate=LR, **OWN_ARGS.get(opt_name, {}), **cfg)
  built = {}

  def init(params):
    leaves = jax.tree.leaves(params)
    variables = [keras.Variable(np.zeros(p.shape, np.float32), name=f"v{i}")
                 for i, p in enumerate(leaves)]
    opt.build(variables)
    built["treedef"] = jax.tree.structure(params)
    return [jnp.asarray(v.value) for v in opt.variables]

  def step(params, state, grads):
    train_vars, state = opt.stateless_apply(
        state, jax.tree.leaves(grads), jax.tree.leaves(params))
    return jax.tree.unflatten(built["treedef"], train_vars), state

  return init, step


CONTENDERS = {"ours": ours, "fused": fused, "optax": nearest_optax,
              "keras": keras_contender}


# ----------------------------------------------------------------------------
# The bandwidth floor.


def floor_bytes(opt_name, cfg, n, itemsize=4):
  """Bytes one call must move on average, counted per parameter.

  An update call reads g and p and writes p, and reads and writes each of the
  optimizer's slots; global clipping reads g once more (the norm must be
  known before the update); EMA reads and writes the average. With
  accumulation over k calls, a micro-step reads g and reads and writes the
  accumulator (plus the EMA's p read and average read and write); the update
  call reads g and the accumulator twice (norm, update) and resets the
  accumulator. Weight decay and the EMA overwrite add no traffic.
  """
  s = SLOTS[opt_name]
  clip = cfg.get("global_clipnorm") is not None
  ema = 2 if cfg.get("use_ema") else 0
  k = cfg.get("gradient_accumulation_steps") or 1
  if k == 1:
    per = 3 + 2 * s + (1 if clip else 0) + ema
  else:
    micro = 3 + (1 + ema if ema else 0)
    update = (2 if clip else 0) + 2 + 1 + 2 * s + 2 + ema
    per = ((k - 1) * micro + update) / k
  return per * n * itemsize


def bandwidth_kernel(n):
  a = jnp.ones((n,), jnp.float32)
  b = jnp.ones((n,), jnp.float32)
  fn = jax.jit(lambda a, b: a * 1.0001 + b, donate_argnums=0)
  return fn, (a, b), 3 * 4 * n


# ----------------------------------------------------------------------------
# Timing.


class Runner:
  """One jitted step with its live (donated) arguments."""

  def __init__(self, name, init, step, params, grads):
    self.name = name
    state = init(params)
    params = jax.tree.map(jnp.copy, params)
    jitted = jax.jit(step, donate_argnums=(0, 1))
    t0 = time.perf_counter()
    lowered = jitted.lower(params, state, grads)
    self.compiled = lowered.compile()
    self.compile_s = time.perf_counter() - t0
    mem = self.compiled.memory_analysis()
    self.temp_bytes = getattr(mem, "temp_size_in_bytes", float("nan"))
    self.peak_bytes = (
        mem.argument_size_in_bytes + mem.output_size_in_bytes
        - mem.alias_size_in_bytes + mem.temp_size_in_bytes) if mem else 0
    self.state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
    self.args = [params, state]
    self.grads = grads
    self.times = []

  def call(self):
    params, state = self.compiled(self.args[0], self.args[1], self.grads)
    self.args = [params, state]
    return params

  def run(self, calls):
    t0 = time.perf_counter()
    for _ in range(calls):
      out = self.call()
    jax.block_until_ready(out)
    self.times.append((time.perf_counter() - t0) / calls)

  def each_call(self, calls):
    """Per-call times, one call at a time (for micro vs update steps)."""
    out = []
    for _ in range(calls):
      t0 = time.perf_counter()
      jax.block_until_ready(self.call())
      out.append(time.perf_counter() - t0)
    return out


class Bandwidth:
  name = "bw"

  def __init__(self, n):
    self.fn, (self.a, self.b), self.bytes = bandwidth_kernel(n)
    self.times = []

  def run(self, calls):
    t0 = time.perf_counter()
    for _ in range(calls):
      self.a = self.fn(self.a, self.b)
    self.a.block_until_ready()
    self.times.append((time.perf_counter() - t0) / calls)


def median_ms(times):
  return 1e3 * statistics.median(times)


def bench_row(opt_name, cfg_name, params, grads, contenders, rounds, calls,
              bw):
  cfg = CONFIGS[cfg_name]
  runners = []
  for c in contenders:
    if c == "optax" and opt_name in NO_OPTAX_PEER:
      continue
    init, step = CONTENDERS[c](opt_name, cfg)
    runners.append(Runner(c, init, step, params, grads))
  for r in runners:  # Warm up.
    r.run(calls)
    r.times.clear()
  for _ in range(rounds):
    for r in runners + [bw]:
      r.run(calls)
  row = {r.name: r for r in runners}
  ratios = ([a / b for a, b in zip(row["ours"].times, row["optax"].times)]
            if "ours" in row and "optax" in row else [])
  result = {
      "ratio_range": (min(ratios), max(ratios)) if ratios else None,
      "ms": {r.name: median_ms(r.times) for r in runners},
      "compile_s": {r.name: r.compile_s for r in runners},
      "peak_mb": {r.name: r.peak_bytes / 2**20 for r in runners},
      "temp_mb": {r.name: r.temp_bytes / 2**20 for r in runners},
      "state_mb": {r.name: r.state_bytes / 2**20 for r in runners},
  }
  k = cfg.get("gradient_accumulation_steps")
  split = [r for r in ("ours", "fused") if r in row] if k else []
  times = {r: ([], []) for r in split}
  counts = {r: int(jax.tree.leaves(row[r].args[1])[0]) for r in split}
  for _ in range(rounds):  # Micro and update calls, contenders interleaved.
    for name in split:
      micro, update = times[name]
      for i, t in enumerate(row[name].each_call(k)):
        (update if (counts[name] + i + 1) % k == 0 else micro).append(t)
      counts[name] += k
  for name in split:
    prefix = "" if name == "ours" else name + "_"
    result[prefix + "micro_ms"] = median_ms(times[name][0])
    result[prefix + "update_ms"] = median_ms(times[name][1])
  del runners, row
  return result


# ----------------------------------------------------------------------------
# Main.


def fmt(x, spec=".2f"):
  return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else (
      format(x, spec))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true",
                 help="40x4M and 1000x4M, adam and adamax, 5 rounds")
  p.add_argument("--trees", default="40x4M,1000x4M,40x32M,1000x32M",
                 help="comma list of LEAVESxSIZE")
  p.add_argument("--opts", default="adam,adamax,adadelta,rmsprop")
  p.add_argument("--configs", default="plain,clip_wd,ema_acc")
  p.add_argument("--contenders", default="ours,optax,keras")
  p.add_argument("--rounds", type=int, default=7)
  p.add_argument("--calls", type=int, default=2 * K_ACC,
                 help="calls per timed round (a multiple of the accumulation)")
  p.add_argument("--markdown", default=None, help="also write the table here")
  args = p.parse_args(argv)
  if args.quick:
    args.trees, args.opts, args.rounds = "40x4M,1000x4M", "adam,adamax", 5
  contenders = args.contenders.split(",")

  header = ("| tree | opt | config | ours ms | optax ms | keras ms | "
            "ours/optax | ours/keras | ours/min | % of floor | "
            "compile s (ours/optax/keras) | peak MB (ours/optax/keras) | "
            "state MB (ours/optax/keras) | temp MB ours | micro/update ms | "
            "fused micro/update ms | ours/optax per round |")
  # state MB: the optimizer state's bytes after init (Keras: its variables).
  lines = [header, "|" + "---|" * (header.count("|") - 1)]
  print(header, flush=True)
  records = []
  for tree_spec in args.trees.split(","):
    leaves, size = tree_spec.lower().split("x")
    params = make_tree(int(leaves), parse_size(size))
    grads = jax.tree.map(lambda x: 0.01 * x, make_tree(int(leaves),
                                                        parse_size(size), 1))
    n = tree_size(params)
    bw = Bandwidth(n)
    bw.run(args.calls)
    bw.times.clear()
    for opt_name in args.opts.split(","):
      for cfg_name in args.configs.split(","):
        res = bench_row(opt_name, cfg_name, params, grads, contenders,
                        args.rounds, args.calls, bw)
        bw_gbs = bw.bytes / statistics.median(bw.times[-args.rounds:]) / 1e9
        ms = res["ms"]
        floor_ms = floor_bytes(opt_name, CONFIGS[cfg_name], n) / (
            bw_gbs * 1e9) * 1e3
        others = [ms[c] for c in ("optax", "keras") if c in ms]
        o = ms.get("ours")
        rec = dict(tree=tree_spec, opt=opt_name, config=cfg_name, n=n,
                   bw_gbs=bw_gbs, floor_ms=floor_ms, **res)
        records.append(rec)
        g = lambda d, c: d.get(c)
        line = (
            f"| {tree_spec} | {opt_name} | {cfg_name} | {fmt(o)} | "
            f"{fmt(g(ms, 'optax'))} | {fmt(g(ms, 'keras'))} | "
            f"{fmt(o / ms['optax'] if o and 'optax' in ms else None)} | "
            f"{fmt(o / ms['keras'] if o and 'keras' in ms else None)} | "
            f"{fmt(o / min(others) if o and others else None)} | "
            f"{fmt(100 * floor_ms / o if o else None, '.0f')} | "
            + "/".join(fmt(g(res['compile_s'], c), '.1f')
                       for c in ('ours', 'optax', 'keras')) + " | "
            + "/".join(fmt(g(res['peak_mb'], c), '.0f')
                       for c in ('ours', 'optax', 'keras')) + " | "
            + "/".join(fmt(g(res['state_mb'], c), '.1f')
                       for c in ('ours', 'optax', 'keras')) + " | "
            f"{fmt(g(res['temp_mb'], 'ours'), '.1f')} | "
            + (f"{fmt(res['micro_ms'])}/{fmt(res['update_ms'])} "
               f"({res['micro_ms'] / res['update_ms']:.2f}x)"
               if "micro_ms" in res else "-") + " | "
            + (f"{fmt(res['fused_micro_ms'])}/{fmt(res['fused_update_ms'])} "
               f"({res['fused_micro_ms'] / res['fused_update_ms']:.2f}x)"
               if "fused_micro_ms" in res else "-") + " | "
            + ("{:.2f}-{:.2f}".format(*res["ratio_range"])
               if res["ratio_range"] else "-") + " |")
        lines.append(line)
        print(line, flush=True)
      print(f"<!-- {tree_spec}: {n} params, elementwise bandwidth "
            f"{bw_gbs:.1f} GB/s -->", flush=True)
      lines.append(f"<!-- {tree_spec}: {n} params, bandwidth {bw_gbs:.1f} "
                   "GB/s -->")
    del params, grads, bw
  if args.markdown:
    with open(args.markdown, "w") as f:
      f.write(f"<!-- python {' '.join(sys.argv)} -->\n")
      f.write(f"<!-- jax {jax.__version__}, optax {optax.__version__}, "
              f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs, devices {jax.devices()} -->\n")
      f.write("\n".join(lines) + "\n")
  return records


if __name__ == "__main__":
  main()
