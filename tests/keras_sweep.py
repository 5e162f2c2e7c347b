"""A wide random sweep against Keras 3, beyond what the suite runs.

Each configuration draws an optimizer, its own arguments (including 0 for the
betas and rho, epsilon up to 1), a clip (including a bound of 0), weight
decay, EMA (momentum 0 to 1, overwrite 1-7), a static loss scale,
accumulation (2-5) and sometimes a schedule, on a random tree with
parameters of scale 0.01-100 and gradients of scale 0.001-10, for 30 steps.
It prints every configuration whose relative deviation from Keras exceeds
1e-5 (relative to |param| + 1e-6, so values near zero stand out), and the
worst. Look at a printed one in absolute terms before calling it a bug.

    KERAS_BACKEND=jax python tests/keras_sweep.py 0     # seeds 0-59
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("KERAS_BACKEND", "jax")
from keras_oracle import *
from catalog import CATALOG, KINDS
import optax_suite as ox, numpy as np, keras
KS = keras.optimizers.schedules
def rand_cfg(rng):
  kind = str(rng.choice(KINDS))
  kw = {}
  r = rng.random()
  lr_ours = lr_keras = float(rng.choice([1e-3, 0.01, 0.1, 1.0]))
  if r < 0.25:
    a = dict(initial_learning_rate=lr_ours, decay_steps=int(rng.integers(2,7)), decay_rate=float(rng.choice([0.5,0.9])), staircase=bool(rng.random()<0.5))
    lr_ours, lr_keras = ox.schedules.exponential_decay(**a), KS.ExponentialDecay(**a)
  elif r < 0.35:
    a = dict(initial_learning_rate=lr_ours, decay_steps=10, alpha=0.1, warmup_target=lr_ours*2, warmup_steps=5)
    lr_ours, lr_keras = ox.schedules.cosine_decay(**a), KS.CosineDecay(**a)
  kwo, kwk = {"learning_rate": lr_ours}, {"learning_rate": lr_keras}
  entry = CATALOG[kind]
  kw.update((entry.sweep_own or entry.random_own)(rng))  # the catalog's draws
  c = rng.choice(["none","clipnorm","clipvalue","global_clipnorm"])
  if c != "none": kw[str(c)] = float(rng.choice([0.0, 0.05, 0.5, 3.0]))
  if rng.random()<0.5: kw["weight_decay"] = float(rng.choice([0.0, 0.001, 0.1]))
  if rng.random()<0.5:
    kw["use_ema"] = True; kw["ema_momentum"] = float(rng.choice([0.0, 0.3, 0.9, 0.999, 1.0]))
    if rng.random()<0.7: kw["ema_overwrite_frequency"] = int(rng.integers(1, 8))
  elif rng.random() < 0.2:
    kw["ema_momentum"] = 0.5; kw["ema_overwrite_frequency"] = 3   # ignored without use_ema
  if rng.random()<0.3: kw["loss_scale_factor"] = float(rng.choice([0.5, 2.0, 1024.0]))
  if rng.random()<0.5: kw["gradient_accumulation_steps"] = int(rng.integers(2, 6))
  kwo.update(kw); kwk.update(kw)
  return kind, kwo, kwk
def main():
  worst = 0
  seed0 = int(sys.argv[1]) if len(sys.argv) > 1 else 0
  for seed in range(seed0, seed0 + 60):
    rng = np.random.default_rng(seed)
    kind, kwo, kwk = rand_cfg(rng)
    shapes = [tuple(int(d) for d in rng.integers(1, 5, size=rng.integers(0, 4))) for _ in range(int(rng.integers(1, 5)))]
    params = {f"l{i}": jnp.asarray(rng.normal(size=s) * float(rng.choice([0.01, 1, 100])), jnp.float32) for i, s in enumerate(shapes)}
    grads = varied_grads(params, 30, seed=seed, scale=float(rng.choice([1e-3, 1, 10])))
    k, _ = keras_trajectory(kind, params, grads, **kwk)
    o, _ = ours_trajectory(getattr(ox, kind)(**kwo), params, grads)
    # relative deviation
    dev = 0
    for a, b in zip(k, o):
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x = np.asarray(x, np.float64); y = np.asarray(y, np.float64)
        nan = np.isnan(x) & np.isnan(y)
        d = np.where(nan, 0, np.abs(x - y) / (1e-6 + np.abs(x)))
        dev = max(dev, float(np.max(d, initial=0)))
    worst = max(worst, dev)
    if dev > 1e-5 or not np.isfinite(dev):
      print("MISMATCH", seed, kind, {k_: (v if not callable(v) else type(v).__name__) for k_, v in kwo.items()}, dev, flush=True)
  print("worst rel dev", worst)


if __name__ == "__main__":
  main()
