"""optax_suite inside the training loops users already have.

Each test trains a small real model on scikit-learn's bundled digits data
(1797 8x8 images, no download) through a library's own intended API: Flax NNX
(`nnx.Optimizer`), Flax linen (`TrainState`), Haiku, Equinox
(`eqx.filter_jit` on `eqx.filter(model, eqx.is_array)`), and a plain
`jax.jit` step with donated buffers. Each must reach a stated training loss;
the NNX and linen cases must give the numbers of the plain functional loop
(to float32 rounding of differently fused code), which proves they hand
`params` to `update` (weight decay and EMA need them, and would raise
without them); the Equinox case gives those of a plain dict loop bit for bit
and those of the same model in Flax to float32 rounding.

The stated loss: softmax cross-entropy of a 64-32-10 tanh MLP. At
initialisation it is about log(10) = 2.30; 150 full-batch steps of any of the
optimizers below bring it under 0.25 (the runs reach 0.03 to 0.12).
"""

import functools
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


def train_loop(opt, params, loss_fn, x, y, steps, split=False):
  """`steps` jitted full-batch steps on `loss_fn(params, x, y)` from
  `params`, each with `ox.apply`, or with `split=True` in the split form of
  docs/getting_started.md (`opt.update`, then `optax.apply_updates`).
  Returns the parameters, the state and the loss before each step."""
  state = opt.init(params)

  @jax.jit
  def train_step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    if split:
      updates, state = opt.update(grads, state, params)
      params = optax.apply_updates(params, updates)
    else:
      params, state = ox.apply(opt, grads, (params, state))
    return params, state, loss

  losses = []
  for _ in range(steps):
    params, state, loss = train_step(params, state, x, y)
    losses.append(float(loss))
  return params, state, losses


def functional_run(opt, params, x, y, steps):
  """The plain `jax.jit` loop of docs/getting_started.md, in its split form
  (`opt.update`, `optax.apply_updates`): the reference for the other APIs."""
  return train_loop(opt, params, lambda p, x, y: xent(mlp_apply(p, x), y),
                    x, y, steps, split=True)


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


@pytest.mark.slow
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


@pytest.mark.slow
def test_haiku_transform_trains_with_clipping_and_accumulation(digits):
  import haiku as hk
  x, y = digits

  def forward(x):
    return hk.nets.MLP([HIDDEN, 10], activation=jnp.tanh)(x)

  net = hk.without_apply_rng(hk.transform(forward))
  params = net.init(jax.random.key(2), x[:1])
  k = 2
  opt = ox.adam(0.01, global_clipnorm=1.0, gradient_accumulation_steps=k)
  _, _, losses = train_loop(opt, params,
                            lambda p, x, y: xent(net.apply(p, x), y), x, y,
                            STEPS * k, split=True)
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


# Equinox: the model is the pytree. `eqx.filter(model, eqx.is_array)` keeps
# its arrays and puts None where the non-array fields are (the activation
# functions); the static fields (sizes, `use_bias`) are not leaves at all.
# Its Linear layers keep `weight` as (out, in) and name their leaves by
# attribute (`.layers[0].bias`), so weight decay's `"^bias$"` must find them
# through the attribute keys of the path.
EQX_OPTIMIZERS = ("adam", "nadam", "rmsprop", "lion", "lamb")
EQX_OPTIONS = dict(weight_decay=1e-3, exclude_from_weight_decay=["^bias$"],
                   use_ema=True, gradient_accumulation_steps=2)
# Lamb's trust ratio scales each step by the weight's norm: it needs a larger
# rate to reach the stated loss in the same steps.
EQX_LEARNING_RATES = {"lamb": 0.02}


def eqx_mlp(seed=4):
  import equinox as eqx
  return eqx.nn.MLP(64, 10, HIDDEN, depth=1, activation=jnp.tanh,
                    key=jax.random.key(seed))


def eqx_run(opt, model, x, y, steps):
  """The Equinox loop of docs/getting_started.md."""
  import equinox as eqx
  state = opt.init(eqx.filter(model, eqx.is_array))

  @eqx.filter_jit
  def train_step(model, state, x, y):
    loss_of = lambda m: xent(jax.vmap(m)(x), y)
    loss, grads = eqx.filter_value_and_grad(loss_of)(model)
    params, static = eqx.partition(model, eqx.is_array)
    params, state = ox.apply(opt, grads, (params, state))
    return eqx.combine(params, static), state, loss

  losses = []
  for _ in range(steps):
    model, state, loss = train_step(model, state, x, y)
    losses.append(float(loss))
  return model, state, losses


def eqx_to_flax(params):
  """An Equinox MLP's arrays as the Flax linen Dense params of `FlaxMLP`."""
  hidden, out = params.layers
  return {"hidden": {"kernel": hidden.weight.T, "bias": hidden.bias},
          "out": {"kernel": out.weight.T, "bias": out.bias}}


def eqx_to_dict(params):
  """An Equinox MLP's arrays as a plain dict in Equinox's (out, in) layout."""
  return {f"layer{i}": {"weight": layer.weight, "bias": layer.bias}
          for i, layer in enumerate(params.layers)}


def dict_run(opt, params, x, y, steps):
  """The plain loop over a params dict, computing what `eqx.nn.MLP` does."""
  def apply_fn(p, x):
    h = jnp.tanh(p["layer0"]["weight"] @ x + p["layer0"]["bias"])
    return p["layer1"]["weight"] @ h + p["layer1"]["bias"]
  loss_fn = lambda p, x, y: xent(jax.vmap(lambda v: apply_fn(p, v))(x), y)
  return train_loop(opt, params, loss_fn, x, y, steps)


def flax_run(opt, params, x, y, steps):
  """The same model in Flax linen (Dense layers), the same `ox.apply` step."""
  import flax.linen as nn

  class FlaxMLP(nn.Module):

    @nn.compact
    def __call__(self, x):
      x = jnp.tanh(nn.Dense(HIDDEN, name="hidden")(x))
      return nn.Dense(10, name="out")(x)

  model = FlaxMLP()
  loss_fn = lambda p, x, y: xent(model.apply({"params": p}, x), y)
  return train_loop(opt, params, loss_fn, x, y, steps)


@pytest.mark.fast_cases(2)
@pytest.mark.parametrize("name", EQX_OPTIMIZERS)
def test_equinox_filter_jit_matches_flax(digits, name):
  """An `eqx.nn.MLP` trained under `eqx.filter_jit` with `ox.apply` on
  `eqx.filter(model, eqx.is_array)` (None leaves, static fields), with the
  EMA, accumulation and weight decay excluding Equinox's `bias` fields,
  gives the numbers of the same model in Flax from the same weights, and
  `finalize_variable_values` swaps the EMA into the Equinox arrays."""
  import equinox as eqx
  x, y = digits
  lr = EQX_LEARNING_RATES.get(name, 0.01)
  make_opt = lambda: getattr(ox, name)(learning_rate=lr, **EQX_OPTIONS)
  model = eqx_mlp()
  start = eqx.filter(model, eqx.is_array)
  assert None in jax.tree.leaves(start, is_leaf=lambda v: v is None)
  k = EQX_OPTIONS["gradient_accumulation_steps"]
  model, state, losses = eqx_run(make_opt(), model, x, y, STEPS * k)
  assert losses[-1] < TARGET_LOSS < losses[0]
  assert losses[0::k] == losses[1::k]  # micro-steps leave the model alone

  params = eqx.filter(model, eqx.is_array)
  # The plain loop over a dict of the same arrays: the same numbers, bit for
  # bit (None leaves and static fields change nothing).
  same, _, same_losses = dict_run(
      make_opt(), eqx_to_dict(start), x, y, STEPS * k)
  assert losses == same_losses
  for a, b in zip(jax.tree.leaves(eqx_to_dict(params)), jax.tree.leaves(same)):
    np.testing.assert_array_equal(a, b)

  # Flax's Dense keeps (in, out) kernels and computes x @ kernel: the same
  # model, rounded differently; 300 steps stay within a few float32 ulps
  # (measured: losses 3e-6, parameters 5e-6 apart at most).
  ref, ref_state, ref_losses = flax_run(
      make_opt(), eqx_to_flax(start), x, y, STEPS * k)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=5e-6)
  got = eqx_to_flax(params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

  final = ox.finalize_variable_values(params, state)
  ref_final = ox.finalize_variable_values(ref, ref_state)
  ema = eqx_to_flax(state.ema.ema)
  for f, e, r in zip(jax.tree.leaves(eqx_to_flax(final)), jax.tree.leaves(ema),
                     jax.tree.leaves(ref_final)):
    np.testing.assert_array_equal(f, e)
    np.testing.assert_allclose(f, r, rtol=1e-4, atol=1e-5)
  final_model = eqx.combine(final, eqx.filter(model, eqx.is_array,
                                              inverse=True))
  assert float(xent(jax.vmap(final_model)(x), y)) < TARGET_LOSS


@pytest.mark.parametrize("name", ("adam", "adamw", "sgd"))
def test_equinox_bias_fields_are_excluded_from_weight_decay(name):
  """`exclude_from_weight_decay=["^bias$"]` finds Equinox's `bias` fields
  (attribute keys under a tuple of layers): with zero gradients one step
  decays every weight by `1 - lr * wd` and leaves every (non-zero) bias as
  it was; without the exclusion the biases decay too."""
  import equinox as eqx
  params = eqx.filter(eqx_mlp(), eqx.is_array)
  zeros = jax.tree.map(jnp.zeros_like, params)
  lr, wd = 0.1, 0.5
  mask = ox.decay_mask(params, exclude_from_weight_decay=["^bias$"])
  assert [layer.weight for layer in mask.layers] == [True, True]
  assert [layer.bias for layer in mask.layers] == [False, False]

  for exclude, bias_factor in ((["^bias$"], 1.0), (None, 1 - lr * wd)):
    opt = getattr(ox, name)(learning_rate=lr, weight_decay=wd,
                            exclude_from_weight_decay=exclude)
    new, _ = jax.jit(functools.partial(ox.apply, opt))(
        zeros, (params, opt.init(params)))
    for old, now in zip(params.layers, new.layers):
      assert float(jnp.max(jnp.abs(old.bias))) > 0  # Equinox's biases
      np.testing.assert_allclose(now.weight, old.weight * (1 - lr * wd),
                                 rtol=1e-6)
      np.testing.assert_allclose(now.bias, old.bias * bias_factor, rtol=1e-6)
