"""optax_suite inside the training loops users already have.

Each test trains a small real model on scikit-learn's bundled digits data
(1797 8x8 images, no download) through a library's own intended API: Flax NNX
(`nnx.Optimizer`), Flax linen (`TrainState`), Haiku, and a plain `jax.jit`
step with donated buffers. Each must reach a stated training loss, and the
NNX and linen cases must give the numbers of the plain functional loop (to
float32 rounding of differently fused code), which proves they hand `params`
to `update` (weight decay and EMA need them, and would raise without them).

The stated loss: softmax cross-entropy of a 64-32-10 tanh MLP. At
initialisation it is about log(10) = 2.30; 150 full-batch steps of any of the
optimizers below bring it under 0.25 (the runs reach 0.03 to 0.12).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import optax_suite as ox  # noqa: E402

STEPS = 150
TARGET_LOSS = 0.25
HIDDEN = 32


@pytest.fixture(scope="module")
def digits():
  x, y = load_digits(return_X_y=True)
  return jnp.asarray(x / 16.0, jnp.float32), jnp.asarray(y, jnp.int32)


def init_mlp(seed=0):
  """A 64-32-10 MLP as a plain pytree (Glorot-uniform kernels, zero biases)."""
  k1, k2 = jax.random.split(jax.random.key(seed))
  glorot = jax.nn.initializers.glorot_uniform()
  return {
      "hidden": {"kernel": glorot(k1, (64, HIDDEN)), "bias": jnp.zeros(HIDDEN)},
      "out": {"kernel": glorot(k2, (HIDDEN, 10)), "bias": jnp.zeros(10)},
  }


def mlp_apply(params, x):
  h = jnp.tanh(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
  return h @ params["out"]["kernel"] + params["out"]["bias"]


def xent(logits, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def functional_run(opt, params, x, y, steps):
  """The plain `jax.jit` loop of docs/getting_started.md, in its split form
  (`opt.update`, `optax.apply_updates`): the reference for the other APIs."""
  state = opt.init(params)

  @jax.jit
  def step(params, state):
    loss, grads = jax.value_and_grad(
        lambda p: xent(mlp_apply(p, x), y))(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for _ in range(steps):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  return params, state, losses


def test_flax_nnx_optimizer_trains_and_passes_params(digits):
  from flax import nnx
  x, y = digits

  class MLP(nnx.Module):

    def __init__(self, rngs):
      self.hidden = nnx.Linear(64, HIDDEN, rngs=rngs)
      self.out = nnx.Linear(HIDDEN, 10, rngs=rngs)

    def __call__(self, x):
      return self.out(jnp.tanh(self.hidden(x)))

  model = MLP(nnx.Rngs(0))
  start = jax.tree.map(jnp.copy, nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  # Weight decay and EMA both need `params` in `update`: nnx.Optimizer must
  # pass them, or `update` raises.
  make_opt = lambda: ox.adamax(0.02, weight_decay=1e-3, use_ema=True,
                               ema_overwrite_frequency=50)
  optimizer = nnx.Optimizer(model, make_opt(), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer, x, y):
    loss, grads = nnx.value_and_grad(lambda m: xent(m(x), y))(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(train_step(model, optimizer, x, y)) for _ in range(STEPS)]
  assert losses[-1] < TARGET_LOSS < losses[0]

  # The same numbers as the functional loop on the same initial weights.
  # (NNX's pure-dict state has the layout `mlp_apply` reads.)
  ref_params, _, ref_losses = functional_run(make_opt(), start, x, y, STEPS)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
  got = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref_params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_flax_linen_train_state_trains_and_finalize_swaps_in_ema(digits):
  import flax.linen as nn
  from flax.training import train_state
  x, y = digits

  class MLP(nn.Module):

    @nn.compact
    def __call__(self, x):
      x = jnp.tanh(nn.Dense(HIDDEN, name="hidden")(x))
      return nn.Dense(10, name="out")(x)

  model = MLP()
  params = model.init(jax.random.key(1), x[:1])["params"]
  opt = ox.rmsprop(0.005, weight_decay=1e-3, use_ema=True, ema_momentum=0.9)
  state = train_state.TrainState.create(
      apply_fn=model.apply, params=params, tx=opt)

  @jax.jit
  def train_step(state):
    def loss_fn(p):
      return xent(state.apply_fn({"params": p}, x), y)
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss

  losses = []
  for _ in range(STEPS):
    state, loss = train_step(state)
    losses.append(float(loss))
  assert losses[-1] < TARGET_LOSS < losses[0]

  ref_params, ref_state, ref_losses = functional_run(
      opt, params, x, y, STEPS)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)

  # At the end, swap in the EMA weights, as Keras's fit does.
  final = ox.finalize_variable_values(state.params, state.opt_state)
  ema = state.opt_state.ema.ema
  for f, e, p in zip(jax.tree.leaves(final), jax.tree.leaves(ema),
                     jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(f, e)
    assert np.max(np.abs(f - p)) > 1e-4  # momentum 0.9 lags the raw weights
  ema_loss = float(xent(model.apply({"params": final}, x), y))
  assert ema_loss < TARGET_LOSS


def test_haiku_transform_trains_with_clipping_and_accumulation(digits):
  import haiku as hk
  x, y = digits

  def forward(x):
    return hk.nets.MLP([HIDDEN, 10], activation=jnp.tanh)(x)

  net = hk.without_apply_rng(hk.transform(forward))
  params = net.init(jax.random.key(2), x[:1])
  k = 2
  opt = ox.adam(0.01, global_clipnorm=1.0, gradient_accumulation_steps=k)
  state = opt.init(params)

  @jax.jit
  def train_step(params, state):
    loss, grads = jax.value_and_grad(lambda p: xent(net.apply(p, x), y))(
        params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for _ in range(STEPS * k):
    params, state, loss = train_step(params, state)
    losses.append(float(loss))
  assert losses[-1] < TARGET_LOSS < losses[0]
  # Micro-steps leave the parameters alone: each loss repeats once.
  assert losses[0::k] == losses[1::k]


def test_plain_jit_step_with_donated_params_and_state(digits):
  x, y = digits
  params = init_mlp(3)
  opt = ox.adam(0.01, clipnorm=1.0, use_ema=True, weight_decay=1e-4)
  state = opt.init(params)
  _, _, ref_losses = functional_run(opt, params, x, y, STEPS)

  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(
        lambda p: xent(mlp_apply(p, x), y))(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  step = jax.jit(step, donate_argnums=(0, 1))
  losses = []
  for i in range(STEPS):
    old_leaf = params["out"]["kernel"]
    old_slot = state.ema.ema["out"]["kernel"]
    params, state, loss = step(params, state, x, y)
    losses.append(float(loss))
    if i == 0:  # the old buffers were handed over to the step
      assert old_leaf.is_deleted() and old_slot.is_deleted()
  assert losses[-1] < TARGET_LOSS < losses[0]
  np.testing.assert_array_equal(losses, ref_losses)
