"""Demo: train a small model with each optimizer and compare with Keras 3.

Run with ``python -m optax_suite``. It fits a two-layer network to a fixed
synthetic regression task (built in, no download) with each
optimizer and several Keras base options, prints the loss before and after,
and, when Keras 3 is installed, runs Keras on the same gradients and prints
the largest deviation of the parameters over the whole run.
"""

from __future__ import annotations

import functools
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import optax_suite as ox  # noqa: E402

STEPS = 60

CONFIGS = (
    ("adamax", dict(learning_rate=0.01, global_clipnorm=1.0,
                    weight_decay=1e-3)),
    ("adam", dict(learning_rate=0.01, use_ema=True, ema_momentum=0.9,
                  ema_overwrite_frequency=10, gradient_accumulation_steps=2)),
    ("adadelta", dict(learning_rate=1.0, clipnorm=1.0)),
    ("rmsprop", dict(learning_rate=0.003, momentum=0.5, centered=True,
                     loss_scale_factor=64.0)),
    ("sgd", dict(learning_rate=0.05, momentum=0.9, nesterov=True,
                 clipnorm=1.0, weight_decay=1e-3)),
    ("adamw", dict(learning_rate=0.01, weight_decay=0.05, amsgrad=True,
                   global_clipnorm=1.0, gradient_accumulation_steps=2)),
    ("lion", dict(learning_rate=0.003, beta_1=0.8, weight_decay=0.1,
                  use_ema=True, ema_momentum=0.8)),
    ("schedule_free_adamw", dict(learning_rate=0.01, warmup_steps=5,
                                 weight_decay=0.01, clipnorm=1.0)),
    ("muon", dict(learning_rate=0.02, adam_lr_ratio=0.5, use_ema=True,
                  ema_momentum=0.9)),
    ("adagrad", dict(learning_rate=0.05, initial_accumulator_value=0.1,
                     clipvalue=1.0, use_ema=True)),
    ("nadam", dict(learning_rate=0.01, global_clipnorm=1.0,
                   gradient_accumulation_steps=2, weight_decay=1e-3)),
    ("lamb", dict(learning_rate=0.01, weight_decay=0.01, clipnorm=1.0,
                  use_ema=True, ema_momentum=0.9)),
    ("ftrl", dict(learning_rate=0.3, l1_regularization_strength=1e-3,
                  l2_regularization_strength=1e-3, beta=0.1)),
    ("adafactor", dict(learning_rate=0.5, clip_threshold=2.0,
                       weight_decay=1e-3)),
)


def _data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(256, 8)).astype(np.float32)
  w = rng.normal(size=(8, 1)).astype(np.float32)
  y = np.tanh(x @ w) + 0.05 * rng.normal(size=(256, 1)).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(y)


def _init_params():
  rng = np.random.default_rng(1)
  return {
      "hidden": {"kernel": jnp.asarray(rng.normal(size=(8, 16)) * 0.3,
                                       jnp.float32),
                 "bias": jnp.zeros(16, jnp.float32)},
      "out": {"kernel": jnp.asarray(rng.normal(size=(16, 1)) * 0.3,
                                    jnp.float32),
              "bias": jnp.zeros(1, jnp.float32)},
  }


def _loss(params, x, y):
  h = jnp.tanh(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
  pred = h @ params["out"]["kernel"] + params["out"]["bias"]
  return jnp.mean((pred - y) ** 2)


def _train(opt, params, x, y, scale):
  params = jax.tree.map(jnp.copy, params)  # the step donates its inputs
  state = opt.init(params)

  @functools.partial(jax.jit, donate_argnums=(0, 1))  # update in place
  def step(params, state):
    loss, grads = jax.value_and_grad(_loss)(params, x, y)
    # As if the loss were scaled.
    grads = jax.tree.map(lambda g: g * scale, grads)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss, grads

  history, grads_seq, per_step = [], [], []
  for _ in range(STEPS):
    params, state, loss, grads = step(params, state)
    history.append(float(loss))
    grads_seq.append(grads)
    per_step.append(jax.device_get(params))  # a host copy: params are donated
  final = ox.finalize_variable_values(params, state)
  return final, history, grads_seq, per_step


def _keras_deviation(kind, kwargs, params0, grads_seq, ours_params):
  """Max |ours - keras| over the run, Keras fed the very same gradients."""
  import keras  # pylint: disable=g-import-not-at-top

  from optax_suite._factories import REGISTRY  # pylint: disable=g-import-not-at-top
  class_name = next(name for name, spec in REGISTRY.items()
                    if spec.factory is getattr(ox, kind))
  opt = getattr(keras.optimizers, class_name)(**kwargs)
  leaves, treedef = jax.tree.flatten(params0)
  variables = [keras.Variable(np.asarray(p)) for p in leaves]
  opt.build(variables)
  apply = jax.jit(lambda o, g, v: opt.stateless_apply(o, g, v))
  train = [v.value for v in variables]
  opt_vars = [v.value for v in opt.variables]
  worst = 0.0
  for grads, ours in zip(grads_seq, ours_params):
    train, opt_vars = apply(opt_vars, jax.tree.leaves(grads), train)
    worst = max(worst, max(float(jnp.max(jnp.abs(a - b)))
                           for a, b in zip(train, jax.tree.leaves(ours))))
  return worst


def main() -> int:
  x, y = _data()
  params0 = _init_params()
  try:
    import keras  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    have_keras = True
  except ImportError:
    have_keras = False
  print(f"optax_suite {ox.__version__} demo: {STEPS} full-batch steps, "
        f"jax {jax.__version__} on {jax.default_backend()}")
  print(f"{'optimizer':<9} {'loss start':>10} {'loss end':>9} "
        f"{'max |ours-keras|':>17}  options")
  worst = 0.0
  for kind, kwargs in CONFIGS:
    scale = kwargs.get("loss_scale_factor") or 1.0
    opt = getattr(ox, kind)(**kwargs)
    start = time.perf_counter()
    final, history, grads_seq, per_step = _train(opt, params0, x, y, scale)
    seconds = time.perf_counter() - start
    final_loss = float(_loss(final, x, y))
    dev = "n/a (no keras)"
    if have_keras:
      d = _keras_deviation(kind, kwargs, params0, grads_seq, per_step)
      worst = max(worst, d)
      dev = f"{d:.3g}"
    options = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    print(f"{kind:<9} {history[0]:>10.4f} {final_loss:>9.4f} {dev:>17}  "
          f"{options} ({seconds:.1f}s)")
  if have_keras:
    print(f"largest deviation from Keras 3 over all runs: {worst:.3g}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
