"""Keras `model.fit` and Flax + optax_suite train the same curve on real data.

The data is scikit-learn's bundled digits set (1797 8x8 images, shipped with
the package, no download). One 64-32-10 tanh MLP, one set of initial weights
(Keras's Glorot init, copied into Flax), full-batch training with
`shuffle=False`, so every epoch is exactly one optimizer call on the same
batch. Keras runs `model.fit` on its JAX backend; we run a jitted Flax linen
step with optax_suite. Adamax and RMSprop, each with `global_clipnorm`, EMA
with overwrite, and gradient accumulation on.

The tolerance, derived rather than guessed: the two sides compute the same
float32 function with different code (Keras's cross-entropy and fusions vs.
optax's and Flax's), so a single loss agrees to an ulp or so (about 1e-7
relative). How such differences grow over the run is measured, not assumed:
our side is trained twice, from the same weights and from the weights moved
by one ulp, and the largest loss difference is the noise floor (2.4e-7 to
3e-7 here, one or two ulps of a loss near 2.5). The Keras curve must agree
with ours within 10x that floor plus 1e-6 relative (about 5e-6); measured,
the curves differ by at most one ulp, 2.4e-7.

The last test shows the bound catches real differences: a plain optax port
(`MultiSteps` of clipping and `optax.adamax`, no EMA) is already 6e-6 off
before the first EMA overwrite (epsilon placement) and 0.3 to 0.6 off after.
"""

import functools
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import optax_suite as ox  # noqa: E402

EPOCHS = 50  # calls; with accumulation of 2, 25 update steps
HIDDEN = 32
COMMON = dict(global_clipnorm=1.0, use_ema=True, ema_momentum=0.9,
              ema_overwrite_frequency=5, gradient_accumulation_steps=2)
CONFIGS = {
    "adamax": (keras.optimizers.Adamax, ox.adamax, dict(learning_rate=0.03)),
    "rmsprop": (keras.optimizers.RMSprop, ox.rmsprop,
                dict(learning_rate=0.01, momentum=0.5)),
}


@pytest.fixture(scope="module")
def keras_runs():
  return {}


@pytest.fixture(scope="module")
def digits():
  x, y = load_digits(return_X_y=True)
  return (x / 16.0).astype(np.float32), y.astype(np.int32)


def keras_model(seed):
  keras.utils.set_random_seed(seed)
  return keras.Sequential([
      keras.Input((64,)),
      keras.layers.Dense(HIDDEN, activation="tanh"),
      keras.layers.Dense(10),
  ])


class MLP(nn.Module):

  @nn.compact
  def __call__(self, x):
    hidden = jnp.tanh(nn.Dense(HIDDEN)(x))
    return nn.Dense(10)(hidden)


def flax_params_from_keras(model):
  k1, b1, k2, b2 = [jnp.asarray(w) for w in model.get_weights()]
  return {"Dense_0": {"kernel": k1, "bias": b1},
          "Dense_1": {"kernel": k2, "bias": b2}}


def keras_fit(keras_cls, kwargs, x, y, seed=0):
  model = keras_model(seed)
  start = flax_params_from_keras(model)
  model.compile(optimizer=keras_cls(**kwargs),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  history = model.fit(x, y, batch_size=len(x), epochs=EPOCHS, shuffle=False,
                      verbose=0)
  # `fit` ends with `finalize_variable_values`: the EMA is swapped in.
  return start, np.array(history.history["loss"]), flax_params_from_keras(
      model)


@functools.lru_cache(maxsize=None)
def train_step(opt):
  model = MLP()

  @jax.jit
  def step(params, state, x, y):
    def loss_fn(p):
      logits = model.apply({"params": p}, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss
  return step


def flax_fit(opt, params, x, y):
  step = train_step(opt)
  state = opt.init(params)
  losses = []
  for _ in range(EPOCHS):
    params, state, loss = step(params, state, x, y)
    losses.append(float(loss))
  return np.array(losses), ox.finalize_variable_values(params, state)


def one_ulp_up(params):
  return jax.tree.map(lambda p: jnp.nextafter(p, jnp.inf), params)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_keras_fit_and_flax_optax_suite_train_the_same_curve(
    name, digits, keras_runs):
  x, y = digits
  keras_cls, ours, kwargs = CONFIGS[name]
  kwargs = dict(kwargs, **COMMON)
  keras_runs[name] = keras_fit(keras_cls, kwargs, x, y)
  start, keras_losses, keras_final = keras_runs[name]
  opt = ours(**kwargs)
  our_losses, our_final = flax_fit(opt, start, x, y)
  nudged_losses, _ = flax_fit(opt, one_ulp_up(start), x, y)

  noise_floor = np.max(np.abs(our_losses - nudged_losses))
  tolerance = 10 * noise_floor + 1e-6 * np.abs(our_losses)
  deviation = np.abs(keras_losses - our_losses)
  assert np.all(deviation <= tolerance), (
      f"max deviation {deviation.max():.3g}, noise floor {noise_floor:.3g}")
  assert our_losses[-1] < 0.5 * our_losses[0]  # it did train
  # The weights Keras keeps after fit (its EMA) are ours after finalize.
  for a, b in zip(jax.tree.leaves(keras_final), jax.tree.leaves(our_final)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_plain_optax_port_is_outside_the_tolerance(digits, keras_runs):
  """The bound is tight enough to catch what plain optax does differently."""
  x, y = digits
  if "adamax" not in keras_runs:
    kwargs = dict(CONFIGS["adamax"][2], **COMMON)
    keras_runs["adamax"] = keras_fit(keras.optimizers.Adamax, kwargs, x, y)
  start, keras_losses, _ = keras_runs["adamax"]
  plain = optax.MultiSteps(
      optax.chain(optax.clip_by_global_norm(1.0), optax.adamax(0.03)),
      every_k_schedule=2)
  plain_losses, _ = flax_fit(
      optax.with_extra_args_support(plain), start, x, y)
  assert np.max(np.abs(keras_losses - plain_losses)[:20]) > 1e-3
