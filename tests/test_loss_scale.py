"""loss_scale_optimizer against Keras's LossScaleOptimizer, and its guarantees.

Keras (JAX backend, `stateless_apply` under `jax.jit`) is the oracle for the
parameters and the dynamic scale after every step. The other tests check
what Keras does not show directly: a skipped step leaves every bit of the
parameters and of the inner state as it was.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import keras
import numpy as np
import optax
import pytest

import optax_suite as ox
from keras_oracle import KERAS_CLASSES
from keras_oracle import build_keras
from keras_oracle import make_params
from keras_oracle import max_deviation
from keras_oracle import varied_grads

FACTORIES = {"adam": ox.adam, "adamax": ox.adamax, "rmsprop": ox.rmsprop,
             "adadelta": ox.adadelta, "ftrl": ox.ftrl,
             "adafactor": ox.adafactor}


def keras_ls_trajectory(kind, params, grads_seq, initial_scale, growth, **kw):
  """Params and dynamic scale after each step of Keras's LossScaleOptimizer."""
  inner = KERAS_CLASSES[kind](**kw)
  opt = keras.optimizers.LossScaleOptimizer(
      inner, initial_scale=initial_scale, dynamic_growth_steps=growth)
  opt, variables = build_keras(opt, params)
  idx = [i for i, v in enumerate(opt.variables) if v is opt.dynamic_scale][0]
  treedef = jax.tree.structure(params)

  @jax.jit
  def step(opt_vars, train_vars, grads):
    return opt.stateless_apply(opt_vars, grads, train_vars)

  train_vars = [v.value for v in variables]
  opt_vars = [v.value for v in opt.variables]
  out, scales = [], []
  for grads in grads_seq:
    train_vars, opt_vars = step(opt_vars, train_vars, jax.tree.leaves(grads))
    out.append(jax.tree.unflatten(treedef, [np.asarray(v) for v in train_vars]))
    scales.append(float(opt_vars[idx]))
  return out, scales


def ours_ls_trajectory(opt, params, grads_seq):
  """Params and scale after each step of our optimizer, one jit for all."""
  state = opt.init(params)

  @jax.jit
  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  out, scales = [], []
  for grads in grads_seq:
    params, state = step(params, state, grads)
    out.append(jax.tree.map(np.asarray, params))
    scales.append(float(state.scale))
  return out, scales, state


def poison(grads, value, leaf_index=0):
  """`grads` with one element of one leaf set to `value` (inf or nan)."""
  leaves, treedef = jax.tree.flatten(grads)
  g = leaves[leaf_index]
  leaves[leaf_index] = g.at[(0,) * g.ndim].set(value)
  return jax.tree.unflatten(treedef, leaves)


def hostile_grads(params, steps, bad_steps, seed=0, scale=100.0):
  """Varied (scaled-looking) gradients with inf/nan at `bad_steps`."""
  seq = varied_grads(params, steps, seed=seed, scale=scale)
  for i, t in enumerate(bad_steps):
    seq[t] = poison(seq[t], np.inf if i % 2 else np.nan, leaf_index=i % 4)
  return seq


@pytest.mark.parametrize("kind,kwargs,growth,initial", [
    # Accumulation and EMA overwrite inside, NaN/Inf steps mixed in.
    ("adam", dict(learning_rate=0.01, gradient_accumulation_steps=2,
                  use_ema=True, ema_overwrite_frequency=3), 3, 2.0**4),
    ("adamax", dict(learning_rate=0.02, gradient_accumulation_steps=3,
                    use_ema=True, weight_decay=0.01), 3, 2.0**10),
    ("rmsprop", dict(learning_rate=0.01, momentum=0.5, centered=True,
                     use_ema=True, ema_momentum=0.9,
                     gradient_accumulation_steps=2, global_clipnorm=5.0),
     3, 2.0**15),
    ("ftrl", dict(learning_rate=0.05, l1_regularization_strength=0.01,
                  beta=0.2, gradient_accumulation_steps=2, use_ema=True,
                  ema_overwrite_frequency=4, weight_decay=0.02), 3, 2.0**8),
    ("adafactor", dict(learning_rate=0.05, clip_threshold=0.5,
                       gradient_accumulation_steps=3, use_ema=True,
                       global_clipnorm=2.0, weight_decay=0.01), 3, 2.0**12),
])
def test_matches_keras_with_non_finite_steps(kind, kwargs, growth, initial):
  """Params and scale equal Keras's at every one of 40 steps, 7 of them bad.

  The bad steps come singly and in runs (scale halves repeatedly); the runs
  of finite steps in between are longer than `growth` (scale doubles).
  """
  params = make_params()
  grads = hostile_grads(params, 40, bad_steps=(5, 6, 13, 14, 15, 20, 33))
  want, want_scale = keras_ls_trajectory(
      kind, params, grads, initial, growth, **kwargs)
  opt = ox.loss_scale_optimizer(
      FACTORIES[kind](**kwargs), initial_scale=initial,
      dynamic_growth_steps=growth)
  got, got_scale, _ = ours_ls_trajectory(opt, params, grads)
  assert got_scale == want_scale
  assert len(set(got_scale)) >= 4  # it both grew and shrank
  assert max_deviation(want, got) <= 1e-6


def test_long_run_grows_and_shrinks_like_keras():
  """200 steps, growth every 3: scale trajectory and params equal Keras's.

  Starting at 1, the scale climbs to 2**15 (45 finite steps in a row), a
  burst of 25 bad steps drives it down to 2**-10, and it climbs again.
  """
  params = make_params(seed=1)
  bad = tuple(range(45, 70)) + (150, 151, 180)
  grads = hostile_grads(params, 200, bad_steps=bad, seed=1, scale=1.0)
  kwargs = dict(learning_rate=0.003, gradient_accumulation_steps=2,
                use_ema=True, ema_overwrite_frequency=7)
  want, want_scale = keras_ls_trajectory(
      "adam", params, grads, 1.0, 3, **kwargs)
  got, got_scale, _ = ours_ls_trajectory(
      ox.loss_scale_optimizer(ox.adam(**kwargs), 1.0, 3), params, grads)
  assert got_scale == want_scale
  assert max(got_scale) >= 2.0**15 and min(got_scale) <= 2.0**-10
  assert max_deviation(want, got) <= 1e-6


def test_inner_static_scale_ignored_like_keras():
  """An inner loss_scale_factor is ignored (warned about), as Keras does."""
  params = make_params()
  grads = hostile_grads(params, 25, bad_steps=(4, 9))
  kwargs = dict(learning_rate=0.01, loss_scale_factor=8.0)
  want, want_scale = keras_ls_trajectory("adamax", params, grads, 64.0, 3,
                                         **kwargs)
  with pytest.warns(UserWarning, match="loss_scale_factor=8.0"):
    opt = ox.loss_scale_optimizer(ox.adamax(**kwargs), 64.0, 3)
  got, got_scale, state = ours_ls_trajectory(opt, params, grads)
  assert got_scale == want_scale
  assert max_deviation(want, got) <= 1e-6
  assert float(state.inner_state.loss_scale_factor) == 1.0


def test_inner_static_scale_found_inside_a_chain():
  """The static factor is reset to 1 wherever it sits in the inner state."""
  inner = optax.chain(optax.identity(), ox.adam(loss_scale_factor=4.0))
  opt = ox.loss_scale_optimizer(inner)
  with pytest.warns(UserWarning, match="4.0"):
    state = opt.init(jnp.ones(2))
  assert float(state.inner_state[1].loss_scale_factor) == 1.0
  g = jnp.array([1.0, -2.0]) * state.scale
  u_ls, _ = opt.update(g, state, jnp.ones(2))
  u_ref, _ = ox.adam().update(jnp.array([1.0, -2.0]),
                              ox.adam().init(jnp.ones(2)))
  np.testing.assert_array_equal(u_ls, u_ref)


def test_no_warning_without_inner_static_scale():
  """Nothing to ignore, nothing to warn about."""
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    ox.loss_scale_optimizer(ox.adam()).init(jnp.ones(2))


def _bits(tree):
  return [np.asarray(x).view(np.uint8 if np.asarray(x).dtype == bool else
                             np.dtype(f"u{np.asarray(x).dtype.itemsize}"))
          for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_skipped_step_leaves_everything_bitwise(bad):
  """A non-finite step changes no bit of params or inner state.

  The inner optimizer is mid-accumulation, mid-EMA, on a schedule and with
  AMSGrad slots; a parameter is -0.0 (a +0.0 update would flip its sign
  bit). Only the scale (halved) and the counter (reset) change.
  """
  params = make_params()
  params["dense"]["bias"] = params["dense"]["bias"].at[0].set(-0.0)
  schedule = optax.exponential_decay(0.01, 3, 0.5)
  opt = ox.loss_scale_optimizer(
      ox.adam(schedule, amsgrad=True, gradient_accumulation_steps=3,
              use_ema=True, ema_overwrite_frequency=5, weight_decay=0.1),
      initial_scale=1024.0, dynamic_growth_steps=100)
  step = jax.jit(opt.update)
  state = opt.init(params)
  for g in varied_grads(params, 4):  # 4 calls: mid-accumulation, EMA running
    updates, state = step(g, state, params)
    params = optax.apply_updates(params, updates)
  assert int(state.step_counter) == 4
  grads = poison(varied_grads(params, 1, seed=3)[0], bad, leaf_index=2)
  updates, new_state = step(grads, state, params)
  new_params = optax.apply_updates(params, updates)
  for a, b in zip(_bits((params, state.inner_state)),
                  _bits((new_params, new_state.inner_state))):
    np.testing.assert_array_equal(a, b)
  assert float(new_state.scale) == float(state.scale) / 2
  assert int(new_state.step_counter) == 0


def test_unscales_with_the_scale_before_growth():
  """On the growing step the gradients are divided by the old scale."""
  opt = ox.loss_scale_optimizer(optax.sgd(1.0), initial_scale=4.0,
                                dynamic_growth_steps=1)
  state = opt.init(jnp.zeros(1))
  updates, state = opt.update(jnp.array([8.0]), state)
  np.testing.assert_array_equal(updates, [-2.0])  # 8 / 4, not 8 / 8
  assert float(state.scale) == 8.0


def test_low_precision_gradients_unscaled_in_float32():
  """Scaled float16 gradients are unscaled in float32, so none underflows.

  2**-26 is below float16's smallest subnormal (2**-24): divided in float16
  it would flush to 0, in float32 it is exact (as in Keras, whose float32
  scale promotes the division).
  """
  opt = ox.loss_scale_optimizer(optax.sgd(1.0), initial_scale=2.0**15)
  params = jnp.zeros(2, jnp.float16)
  state = opt.init(params)
  g = jnp.array([2.0**-20 * 3, 2.0**-26], jnp.float32) * 2.0**15
  updates, state = opt.update(g.astype(jnp.float16), state, params)
  assert updates.dtype == jnp.float32
  np.testing.assert_array_equal(updates, -np.array([3 * 2.0**-20, 2.0**-26]))


def test_scale_loss_picks_the_right_scale():
  """Dynamic scale under loss scaling, else the static factor, else 1."""
  params = {"w": jnp.ones(3)}
  ls = ox.loss_scale_optimizer(ox.adam(), initial_scale=2.0**7)
  state = ls.init(params)
  assert float(ox.scale_loss(3.0, state)) == 3.0 * 2**7
  _, state = ls.update({"w": jnp.full(3, jnp.nan)}, state, params)
  assert float(ox.scale_loss(3.0, state)) == 3.0 * 2**6
  assert float(ox.scale_loss(3.0, ox.adam(loss_scale_factor=5.0).init(
      params))) == 15.0
  assert float(ox.scale_loss(3.0, ox.adam().init(params))) == 3.0
  assert float(ox.scale_loss(3.0, optax.sgd(0.1).init(params))) == 3.0


def test_scaled_training_loop_matches_unscaled():
  """grad(scale_loss(loss)) through the wrapper equals the plain optimizer.

  With power-of-two scales, scaling then unscaling is exact, so 30 jitted
  steps with growth every 4 give bitwise the plain Adam parameters.
  """
  params = make_params()
  target = jax.tree.map(lambda p: p * 0.5 + 1.0, params)

  def loss(p):
    return sum(jnp.sum((a - b) ** 2) for a, b in zip(
        jax.tree.leaves(p), jax.tree.leaves(target)))

  def run(opt, scaled):
    state = opt.init(params)

    @jax.jit
    def step(p, state):
      f = (lambda p: ox.scale_loss(loss(p), state)) if scaled else loss
      updates, state = opt.update(jax.grad(f)(p), state, p)
      return optax.apply_updates(p, updates), state

    p = params
    for _ in range(30):
      p, state = step(p, state)
    return p, state

  plain, _ = run(ox.adam(0.05), scaled=False)
  scaled, state = run(ox.loss_scale_optimizer(ox.adam(0.05), 2.0**10, 4),
                      scaled=True)
  assert float(state.scale) == 2.0**(10 + 7)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(scaled)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("value", [0.0, -1.0, np.inf, np.nan, "big"])
def test_bad_initial_scale(value):
  """initial_scale must be a finite number > 0; the error names it."""
  with pytest.raises(ValueError, match=r"initial_scale=.*" + (
      "big" if value == "big" else "")):
    ox.loss_scale_optimizer(ox.adam(), initial_scale=value)


@pytest.mark.parametrize("value", [0, -3, 2.5, None, True])
def test_bad_dynamic_growth_steps(value):
  """dynamic_growth_steps must be an integer >= 1; the error names it."""
  with pytest.raises(ValueError,
                     match=rf"dynamic_growth_steps={value!r}".replace(
                         ".", r"\.")):
    ox.loss_scale_optimizer(ox.adam(), dynamic_growth_steps=value)


def test_dynamic_loss_scale_is_a_pytree():
  """DynamicLossScale crosses jit; period stays static; adjust as Keras."""
  ls = ox.DynamicLossScale(jnp.float32(8.0), jnp.int32(0), period=3)
  assert len(jax.tree.leaves(ls)) == 2
  adjust = jax.jit(lambda ls, f: ls.adjust(f))
  history = []
  for finite in (True, True, True, False, True, False, False):
    ls = adjust(ls, finite)
    history.append((float(ls.loss_scale), int(ls.counter)))
  assert history == [(8, 1), (8, 2), (16, 0), (8, 0), (8, 1), (4, 0), (2, 0)]
  assert ls.period == 3
  np.testing.assert_array_equal(
      ls.unscale(ls.scale({"a": jnp.array([3.0])}))["a"], [3.0])


def test_all_finite():
  """all_finite looks at floating leaves only and accepts empty trees."""
  assert bool(ox.all_finite({}))
  assert bool(ox.all_finite({"i": jnp.array([2**31 - 1]), "n": None,
                             "f": jnp.ones(2, jnp.bfloat16)}))
  assert not bool(ox.all_finite([jnp.ones(2), jnp.array([-jnp.inf])]))
  assert not bool(ox.all_finite(jnp.array(jnp.nan, jnp.float16)))
