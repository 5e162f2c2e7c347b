"""The compiled steps of every factory: fusions, copies, temporary bytes.

For each of the fourteen factories under a few option sets, compiles the
donated step ``update`` + ``apply_updates`` and ``ox.apply``'s fused step
on a small transformer-like tree, and prints the number of fusions in the
compiled entry computation, its copies of arrays, the temporary bytes of
``memory_analysis()``
and a digest of the optimized HLO text (source metadata left out). Nothing is timed, so the figures
do not depend on the machine's load: run it on two checkouts to see what a
change does to the compiled programs.

    python benchmarks/compiled_steps.py > after.md
    PYTHONPATH=<older checkout> python benchmarks/compiled_steps.py > before.md
    diff before.md after.md
"""

from __future__ import annotations

import hashlib
import os
import re
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import optax_suite as ox  # noqa: E402

FACTORIES = ("adadelta", "adafactor", "adagrad", "adam", "adamax", "adamw",
             "ftrl", "lamb", "lion", "muon", "nadam", "rmsprop",
             "schedule_free_adamw", "sgd")
CONFIGS = {
    "plain": {},
    "clip+wd+ema": dict(global_clipnorm=1.0, weight_decay=0.01, use_ema=True),
    "acc4+ema": dict(gradient_accumulation_steps=4, use_ema=True,
                     ema_overwrite_frequency=3),
}


def tree(d=64):
  keys = iter(jax.random.split(jax.random.key(0), 8))
  shapes = {"attn/kernel": (d, d), "attn/bias": (d,), "ln/scale": (d,),
            "mlp/in": (d, 2 * d), "mlp/in_bias": (2 * d,),
            "mlp/out": (2 * d, d), "mlp/out_bias": (d,)}
  return {k: jax.random.normal(next(keys), s) for k, s in shapes.items()}


def fusions(hlo: str) -> int:
  entry = hlo[hlo.index("\nENTRY"):]
  entry = entry[:entry.index("\n}")]
  return len(re.findall(r" fusion\(", entry))


def array_copies(hlo: str) -> int:
  """Copies of non-scalar arrays in the entry computation (buffers XLA
  duplicates because it cannot update them in place)."""
  entry = hlo[hlo.index("\nENTRY"):]
  entry = entry[:entry.index("\n}")]
  return len(re.findall(r"= \w+\[\d[\d,]*\]\S* copy\(", entry))


def compile_one(step, params, state, grads):
  compiled = jax.jit(step, donate_argnums=(0, 1)).lower(
      params, state, grads).compile()
  text = compiled.as_text()
  temp = compiled.memory_analysis().temp_size_in_bytes
  # The digest skips what names the source (metadata, the module's name).
  program = re.sub(r", metadata=\{[^}]*\}", "", text)
  # Only the computations: not the module line, nor its tables of source
  # files, functions and stack frames.
  program = "\n".join(line for line in program.splitlines()
                      if line.startswith(("%", "ENTRY", "}", " ")))
  # ... and the instruction and computation names, numbered by first use.
  names: dict[str, str] = {}
  program = re.sub(r"%[\w.\-]+|\b[\w.\-]+(?=\s*\{\n|\s*\()",
                   lambda m: names.setdefault(m.group(0), f"n{len(names)}")
                   if m.group(0).startswith("%") else m.group(0), program)
  digest = hashlib.sha1(program.encode()).hexdigest()[:10]
  return fusions(text), array_copies(text), temp, digest


def main() -> int:
  params = tree()
  grads = jax.tree.map(lambda p: jnp.cos(p) * 0.1, params)
  print("| factory | config | split: fusions, copies, temp B, hlo | "
        "fused: fusions, copies, temp B, hlo |")
  print("|---|---|---|---|")
  for name in FACTORIES:
    for label, kwargs in CONFIGS.items():
      opt = getattr(ox, name)(**kwargs)
      state = opt.init(params)

      def split(p, s, g, opt=opt):
        u, s = opt.update(g, s, p)
        return ox.apply_updates(p, u), s

      def fused(p, s, g, opt=opt):
        return ox.apply(opt, g, (p, s))

      cells = [compile_one(f, params, state, grads) for f in (split, fused)]
      print(f"| {name} | {label} | " + " | ".join(
          f"{n}, {c}, {t}, {h}" for n, c, t, h in cells) + " |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
