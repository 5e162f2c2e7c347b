"""loss_scale_optimizer against Keras's LossScaleOptimizer, and its guarantees.

Keras (JAX backend, `stateless_apply` under `jax.jit`) is the oracle for the
parameters and the dynamic scale after every step. The other tests check
what Keras does not show directly: a skipped step leaves every bit of the
parameters and of the inner state as it was.
"""

from __future__ import annotations

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_suite as ox
from catalog import CATALOG
from catalog import KINDS
from helpers import hostile_grads
from helpers import keras_ls_trajectory
from helpers import ours_ls_trajectory
from helpers import poison
from keras_oracle import assert_trajectories_match
from keras_oracle import keras_trajectory
from keras_oracle import make_params
from keras_oracle import max_deviation
from keras_oracle import varied_grads

FACTORIES = {kind: getattr(ox, kind) for kind in KINDS}


def _loss_scale_run(kind):
  """The catalog's options, growth and initial scale for `kind`'s run (a
  default with accumulation, EMA and decay for an entry without one)."""
  run = CATALOG[kind].loss_scale_run
  if run is None:
    lr = CATALOG[kind].parity_learning_rate or 0.01
    run = (dict(learning_rate=lr, gradient_accumulation_steps=2, use_ema=True,
                weight_decay=0.01), 3, 2.0**8)
  return run


# Every optimizer whose slots Keras's LossScaleOptimizer keeps (Nadam's own
# test is below); accumulation and EMA overwrite inside, NaN/Inf steps mixed
# in.
LS_KINDS = [k for k in KINDS if CATALOG[k].keras_loss_scale_keeps_state]


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("kind", LS_KINDS)
def test_matches_keras_with_non_finite_steps(kind):
  """Params and scale equal Keras's at every one of 40 steps, 7 of them bad.

  The bad steps come singly and in runs (scale halves repeatedly); the runs
  of finite steps in between are longer than `growth` (scale doubles).
  """
  kwargs, growth, initial = _loss_scale_run(kind)
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
  assert_trajectories_match(want, got)


def test_nadam_matches_keras_nadam_fed_the_steps_the_scale_lets_through():
  """Nadam under dynamic loss scaling, 40 steps, 7 of them bad.

  Keras's LossScaleOptimizer does not list Nadam's ``u_product`` among its
  variables, so its ``stateless_apply`` (Keras's JAX training path) starts
  it at 1 again on every step (tests/test_rule_nadam.py shows it); Keras's
  other backends keep it. The oracle is therefore what a loss-scale
  optimizer means: Keras's own Nadam fed, on the finite steps only, the
  gradients divided by the scale Keras's LossScaleOptimizer held before the
  step. The scale itself is compared with that optimizer's.
  """
  kwargs = dict(learning_rate=0.01, beta_1=0.8, use_ema=True,
                gradient_accumulation_steps=3, ema_momentum=0.9, clipnorm=2.0)
  params = make_params()
  grads = hostile_grads(params, 40, bad_steps=(5, 6, 13, 14, 15, 20, 33))
  initial, growth = 2.0**12, 3
  _, want_scale = keras_ls_trajectory(
      "nadam", params, grads, initial, growth, **kwargs)
  before = [initial] + want_scale[:-1]
  finite = [bool(ox.all_finite(g)) for g in grads]
  taken = [jax.tree.map(lambda x, s=s: x / np.float32(s), g)
           for g, s, ok in zip(grads, before, finite) if ok]
  inner, _ = keras_trajectory("nadam", params, taken, **kwargs)
  want, last, it = [], params, iter(inner)
  for ok in finite:
    last = next(it) if ok else last
    want.append(last)
  got, got_scale, _ = ours_ls_trajectory(
      ox.loss_scale_optimizer(ox.nadam(**kwargs), initial, growth), params,
      grads)
  assert got_scale == want_scale
  assert len(set(got_scale)) >= 4 and not all(finite)
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
  assert_trajectories_match(want, got)


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
  assert_trajectories_match(want, got)
  # 0 marks it switched off (the inner update then divides by nothing).
  assert float(state.inner_state.loss_scale_factor) == 0.0


def test_inner_static_scale_found_inside_a_chain():
  """The static factor is switched off wherever it sits in the inner state."""
  inner = optax.chain(optax.identity(), ox.adam(loss_scale_factor=4.0))
  opt = ox.loss_scale_optimizer(inner)
  with pytest.warns(UserWarning, match="4.0"):
    state = opt.init(jnp.ones(2))
  assert float(state.inner_state[1].loss_scale_factor) == 0.0
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
  scale promotes the division), and an SGD step of 2**20 times it is a
  normal float16 number again.
  """
  opt = ox.loss_scale_optimizer(optax.sgd(2.0**20), initial_scale=2.0**15)
  params = jnp.zeros(2, jnp.float16)
  state = opt.init(params)
  g = jnp.array([2.0**-20 * 3, 2.0**-26], jnp.float32) * 2.0**15
  updates, state = opt.update(g.astype(jnp.float16), state, params)
  np.testing.assert_array_equal(updates, -np.array([3.0, 2.0**-6]))


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_updates_come_back_in_the_gradients_dtype(dtype, kind="adam"):
  """optax's contract (its `test_preserve_dtype` and the `lax.cond` of
  `test_state_shape_dtype_shard_stability`): updates have the gradients'
  dtype, so a `cond`/`scan` can carry them; the parameters they lead to are
  those the float32 updates of the unscaled gradients lead to, bit for bit
  (the EMA overwrite included)."""
  opt = ox.loss_scale_optimizer(
      FACTORIES[kind](learning_rate=0.05, use_ema=True,
                      ema_overwrite_frequency=2), initial_scale=2.0**4)
  params = make_params()
  params = jax.tree.map(lambda p: p.astype(dtype), params)
  grads_seq = [jax.tree.map(lambda g: (g * 16).astype(dtype), g)
               for g in varied_grads(make_params(), 4)]

  @jax.jit
  def run(params, state, grads_seq):
    def step(carry, grads):
      params, state = carry
      flip = jnp.sum(jax.tree.leaves(grads)[0]) > 1e9  # never, not foldable
      updates, state = jax.lax.cond(
          flip, lambda: (grads, state), lambda: opt.update(grads, state,
                                                           params))
      same = jax.tree.map(lambda u, g: u.dtype == g.dtype, updates,
                                 grads)
      assert all(jax.tree.leaves(same)), (updates, grads)
      return (optax.apply_updates(params, updates), state), updates
    return jax.lax.scan(step, (params, state), grads_seq)

  stacked = jax.tree.map(lambda *g: jnp.stack(g), *grads_seq)
  run(params, opt.init(params), stacked)  # Traces: cond and scan accept them.
  # Step by step against the float32 updates of the inner optimizer on the
  # unscaled gradients, rounded once into the parameter: bit for bit where
  # the step from old to new parameter is exact in `dtype` (same sign, within
  # a factor 2: Sterbenz), else within one rounding of the larger of the two.
  # (tests/test_contract.py checks the dtypes for every optimizer.)
  inner = opt.config["inner"]
  p, state = params, opt.init(params)
  update, inner_update = jax.jit(opt.update), jax.jit(inner.update)
  for grads in grads_seq:
    g32 = jax.tree.map(lambda g, s=state: g.astype(jnp.float32) / s.scale,
                       grads)
    u32, _ = inner_update(g32, state.inner_state, p)
    want = jax.tree.map(lambda q, u: (q + u).astype(q.dtype), p, u32)
    updates, state = update(grads, state, p)
    got = optax.apply_updates(p, updates)
    for old, a, b in zip(*map(jax.tree.leaves, (p, got, want))):
      old, a, b = (np.asarray(x, np.float64) for x in (old, a, b))
      exact = (old * b > 0) & (np.abs(b) <= 2 * np.abs(old)) & (
          np.abs(old) <= 2 * np.abs(b))
      np.testing.assert_array_equal(a[exact], b[exact])
      ulp = np.maximum(np.abs(old), np.abs(b)) * float(jnp.finfo(dtype).eps)
      assert np.all(np.abs(a - b) <= ulp)
    p = got


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


# A static loss scale matters to a rule only through epsilon: with a large
# epsilon, Adam's step is far from scale invariant, so dividing by the wrong
# factor shows in the parameters.
SCALE_SENSITIVE = dict(learning_rate=0.1, epsilon=1.0)


def _scaled_run(opt, state, params, grads, factor_of):
  """Jitted steps on the gradients of `loss * scale_loss`; the params."""

  @jax.jit
  def step(params, state, g):
    # The gradient of `scale_loss(<p, g>, state)`: g times the state's scale.
    scaled = jax.grad(lambda p: ox.scale_loss(
        sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(p),
                                           jax.tree.leaves(g))), state))(
                                               params)
    updates, state = opt.update(scaled, state, params)
    return optax.apply_updates(params, updates), state

  out = []
  for t, g in enumerate(grads):
    factor_of(t, state)
    params, state = step(params, state, g)
    out.append(params)
  return out, state


def test_injected_loss_scale_factor_is_the_one_divided_by():
  """Changing an injected `loss_scale_factor` between steps changes what
  `scale_loss` multiplies by and what `update` divides by, together: the
  run equals the unscaled one (it divided by the value from `init`)."""
  params = make_params(31)
  grads = varied_grads(params, 8, seed=31)
  opt = ox.inject_hyperparams(ox.adam)(**SCALE_SENSITIVE,
                                       loss_scale_factor=4.0)
  factors = [4.0, 64.0, 0.5, 1024.0] * 2

  def set_factor(t, state):
    state.hyperparams["loss_scale_factor"] = jnp.asarray(factors[t],
                                                         jnp.float32)

  got, state = _scaled_run(opt, opt.init(params), params, grads, set_factor)
  assert float(ox.scale_loss(1.0, state)) == factors[-1]
  # The same injected optimizer without a scale (its betas are float32
  # arrays too); the factors are powers of 2, so scaling is exact.
  plain = ox.inject_hyperparams(ox.adam)(**SCALE_SENSITIVE)
  expected, _ = _scaled_run(plain, plain.init(params), params, grads,
                            lambda t, s: None)
  assert max_deviation(expected, got) == 0
  # Dividing by a factor other than the one scaled by is far off.
  wrong = ox.adam(**SCALE_SENSITIVE, loss_scale_factor=4.0)
  off, _ = _scaled_run(wrong, wrong.init(params), params,
                       [jax.tree.map(lambda x: x * 16.0, g) for g in grads],
                       lambda t, s: None)
  assert max_deviation(expected, off) > 1e-3


def test_restored_state_does_not_override_the_constructors_factor():
  """A checkpoint saved by an optimizer with factor 4, restored (flax
  serialization into `opt.init`'s target) into one built with factor 32:
  `update` divides by 32 from the first step, and `scale_loss` follows once
  that update refreshed the state's copy."""
  from flax import serialization  # pylint: disable=g-import-not-at-top
  params = make_params(32)
  grads = varied_grads(params, 6, seed=32)
  old = ox.adam(**SCALE_SENSITIVE, loss_scale_factor=4.0)
  saved = serialization.to_bytes(old.update(grads[0], old.init(params),
                                            params)[1])
  new = ox.adam(**SCALE_SENSITIVE, loss_scale_factor=32.0)
  restored = serialization.from_bytes(new.init(params), saved)
  assert float(restored.loss_scale_factor) == 4.0  # The saved copy.
  plain = ox.adam(**SCALE_SENSITIVE)
  plain_state = serialization.from_bytes(plain.init(params), saved)
  state, plain_state = restored, plain_state._replace(
      loss_scale_factor=jnp.ones([], jnp.float32))
  p, q = params, params
  for g in grads[1:]:
    # Gradients of the loss scaled by the new optimizer's factor.
    u, state = new.update(jax.tree.map(lambda x: 32.0 * x, g), state, p)
    p = optax.apply_updates(p, u)
    assert float(ox.scale_loss(1.0, state)) == 32.0
    v, plain_state = plain.update(g, plain_state, q)
    q = optax.apply_updates(q, v)
  assert max_deviation([q], [p]) <= 1e-6


def _parts(a, b):
  return optax.multi_transform({"a": a, "b": b}, {"w": "a", "v": "b"})


SCALE_PARAMS = {"w": jnp.ones(2), "v": jnp.ones(3)}


@pytest.mark.parametrize("make, scale", [
    (lambda: _parts(ox.adam(loss_scale_factor=4.0),
                    ox.adamax(loss_scale_factor=4.0)), 4.0),
    (lambda: _parts(ox.adam(), optax.sgd(0.1)), 1.0),
    (lambda: optax.masked(ox.adam(), {"w": True, "v": False}), 1.0),
    (lambda: ox.loss_scale_optimizer(_parts(ox.adam(), ox.adamax()),
                                     initial_scale=8.0), 8.0),
    (lambda: ox.loss_scale_optimizer(
        optax.masked(ox.adam(loss_scale_factor=3.0), {"w": True, "v": False}),
        initial_scale=8.0), 8.0),
], ids=["same-static", "one-part-unscaled", "masked-unscaled", "dynamic-around",
        "dynamic-around-masked"])
def test_scale_loss_inside_combinations(make, scale):
  """Issue 9 item 5: inside multi_transform/partition/masked, `scale_loss`
  gives the one scale every part's `update` divides by, eagerly and jitted."""
  state = make().init(SCALE_PARAMS)
  assert float(ox.scale_loss(3.0, state)) == 3.0 * scale
  assert float(jax.jit(ox.scale_loss)(3.0, state)) == 3.0 * scale


@pytest.mark.parametrize("make, match", [
    (lambda: _parts(ox.adam(loss_scale_factor=4.0),
                    ox.adamax(loss_scale_factor=2.0)), "different static"),
    (lambda: _parts(ox.adam(loss_scale_factor=4.0), optax.sgd(0.1)),
     "covers only some"),
    (lambda: optax.partition({"a": ox.adam(loss_scale_factor=4.0),
                              "b": optax.adam(0.1)}, {"w": "a", "v": "b"}),
     "covers only some"),
    (lambda: optax.masked(ox.adam(loss_scale_factor=4.0),
                          {"w": True, "v": False}), "covers only some"),
    (lambda: _parts(ox.loss_scale_optimizer(ox.adam()), ox.adamax()),
     "next to optimizers"),
    (lambda: _parts(ox.loss_scale_optimizer(ox.adam()), optax.sgd(0.1)),
     "sits inside optax.masked"),
    (lambda: _parts(ox.loss_scale_optimizer(ox.adam()),
                    ox.loss_scale_optimizer(ox.adamax())), "2 loss_scale"),
], ids=["different-static", "static-in-one-part", "partition",
        "static-masked", "dynamic-and-static", "dynamic-in-one-part",
        "two-dynamic"])
def test_scale_loss_refuses_a_scale_the_updates_cannot_share(make, match):
  """Where the loss's one scale cannot be what every part's `update` divides
  by, `scale_loss` raises (it used to return the first scale it found, or
  none); under jit, where static factors are traced, the value checks give
  a NaN loss and the structural ones still raise."""
  state = make().init(SCALE_PARAMS)
  with pytest.raises(ValueError, match=match):
    ox.scale_loss(3.0, state)
  try:
    assert np.isnan(float(jax.jit(ox.scale_loss)(3.0, state)))
  except ValueError as e:
    assert re.search(match, str(e))
