"""Parameter EMA: Keras's momentum schedule, overwrite and finalize."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_suite as ox
from catalog import KINDS


def _run(tx, steps, params=None, grads=None):
  params = {"w": jnp.arange(3.0)} if params is None else params
  state = tx.init(params)
  history = []
  for i in range(steps):
    g = {"w": jnp.full(3, float(i + 1))} if grads is None else grads[i]
    u, state = jax.jit(tx.update)(g, state, params)
    params = optax.apply_updates(params, u)
    history.append((params, state))
  return history


def test_first_update_copies_then_averages():
  """Momentum is 0 through the first update, ema_momentum afterwards."""
  m = 0.9
  tx = optax.chain(optax.sgd(0.1), ox.ema(m))
  hist = _run(tx, 3)
  p1 = hist[0][0]["w"]
  np.testing.assert_array_equal(hist[0][1][1].ema["w"], p1)
  expected = m * p1 + (1 - m) * hist[1][0]["w"]
  np.testing.assert_allclose(hist[1][1][1].ema["w"], expected, rtol=1e-6)


def test_overwrite_every_f_update_steps():
  tx = optax.chain(optax.sgd(0.1), ox.ema(0.5, 3))
  hist = _run(tx, 7)
  for i, (params, state) in enumerate(hist):
    average = state[1].ema["w"]
    if (i + 1) % 3 == 0:
      np.testing.assert_allclose(params["w"], average, rtol=1e-6)
    elif i > 0:  # the first update copies the parameters
      assert not np.allclose(params["w"], average)


def test_iterations_count_update_steps_under_accumulation():
  """With k = 2, the momentum is 0 for the first 2 calls (Keras iterations)."""
  tx = optax.chain(optax.sgd(0.1), ox.ema(0.9, gradient_accumulation_steps=2))
  hist = _run(tx, 3)
  np.testing.assert_array_equal(hist[1][1][1].ema["w"], hist[1][0]["w"])
  assert not np.allclose(hist[2][1][1].ema["w"], hist[2][0]["w"])


def test_nan_average_never_leaks_into_params_it_does_not_overwrite():
  tx = optax.chain(optax.sgd(0.1), ox.ema(0.5, 4))
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  state = (state[0], state[1]._replace(ema={"w": jnp.full(3, jnp.nan)}),)
  state = (state[0], state[1]._replace(count=jnp.asarray(5, jnp.int32)))
  u, _ = tx.update({"w": jnp.ones(3)}, state, params)  # (5 + 1) % 4 != 0
  sgd = optax.sgd(0.1)
  want, _ = sgd.update({"w": jnp.ones(3)}, sgd.init(params))
  np.testing.assert_array_equal(u["w"], want["w"])  # sgd's own -0.1 step


def test_finalize_returns_average_and_keeps_integer_leaves():
  opt = ox.adam(learning_rate=0.1, use_ema=True)
  params = {"w": jnp.ones(3), "step": jnp.asarray(4, jnp.int32)}
  state = opt.init(params)
  for _ in range(3):
    g = {"w": jnp.ones(3), "step": jnp.asarray(0, jnp.int32)}
    u, state = opt.update(g, state, params)
    params = optax.apply_updates(params, u)
  final = ox.finalize_variable_values(params, state)
  np.testing.assert_array_equal(final["w"], state.ema.ema["w"])
  assert int(final["step"]) == 4
  assert not np.allclose(final["w"], params["w"])


def test_finalize_without_ema_returns_params():
  opt = ox.adam()
  params = {"w": jnp.ones(3)}
  assert ox.finalize_variable_values(params, opt.init(params)) is params


def test_needs_params():
  tx = ox.ema(0.9)
  with pytest.raises(ValueError, match="params"):
    tx.update({"w": jnp.ones(1)}, tx.init({"w": jnp.ones(1)}))


@pytest.mark.parametrize("name", KINDS)
def test_init_takes_abstract_params(name):
  """`init` accepts `jax.ShapeDtypeStruct` leaves (optax's
  `test_init_with_abstract_input`) and agrees with `jax.eval_shape(init)`:
  the EMA of an abstract parameter is zeros of its shape and dtype."""
  opt = getattr(ox, name)(use_ema=True, ema_overwrite_frequency=2,
                          gradient_accumulation_steps=2, weight_decay=0.1)
  params = {"w": jnp.ones((2, 4, 8)), "b": jnp.ones(3, jnp.bfloat16),
            "n": jnp.asarray(3)}
  abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype),
                          params)
  state = opt.init(abstract)
  shape_of = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)
  assert shape_of(state) == shape_of(jax.eval_shape(opt.init, params))
  assert shape_of(state) == shape_of(opt.init(params))
  np.testing.assert_array_equal(state.ema.ema["w"], np.zeros((2, 4, 8)))


def _bits(x):
  x = np.asarray(x)
  return x.view(np.dtype(f"uint{8 * x.dtype.itemsize}"))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_overwrite_lands_on_the_average_bit_for_bit(dtype):
  """After an overwrite step the parameters are the EMA, bit for bit:
  through `ox.apply_updates(params, updates, state)` always, and through
  `optax.apply_updates` wherever parameter and average are within a factor
  2 of each other (then `avg - p` is exact). The parameters cross zero and
  span 8 orders of magnitude, and the steps are large, so both kinds occur."""
  rng = np.random.default_rng(1)
  w = rng.standard_normal(256) * 10.0 ** rng.integers(-4, 4, 256)
  params = {"w": jnp.asarray(w, dtype), "n": jnp.asarray(7)}
  opt = ox.adam(learning_rate=0.5, use_ema=True, ema_momentum=0.9,
                ema_overwrite_frequency=3)
  update = jax.jit(opt.update)
  state = opt.init(params)
  seen = exact_through_optax = 0
  for step in range(6):
    g = {"w": jnp.asarray(rng.standard_normal(256) * 100, dtype),
         "n": jnp.asarray(0)}
    updates, state = update(g, state, params)
    assert updates["w"].dtype == dtype
    new = ox.apply_updates(params, updates, state)
    if (step + 1) % 3 == 0:
      assert bool(state.ema.overwritten)
      avg = state.ema.ema["w"]
      np.testing.assert_array_equal(_bits(new["w"]), _bits(avg))
      p = np.asarray(params["w"], np.float64)
      a = np.asarray(avg, np.float64)
      near = (p * a > 0) & (np.abs(a) <= 2 * np.abs(p)) & (
          np.abs(p) <= 2 * np.abs(a))
      plain = optax.apply_updates(params, updates)["w"]
      np.testing.assert_array_equal(_bits(plain)[near], _bits(avg)[near])
      seen += near.size
      exact_through_optax += near.sum()
    else:
      assert not bool(state.ema.overwritten)
      np.testing.assert_array_equal(
          _bits(new["w"]), _bits(optax.apply_updates(params, updates)["w"]))
    assert int(new["n"]) == 7
    params = new
  assert 0 < exact_through_optax < seen  # Both kinds of leaves were seen.


@pytest.mark.parametrize("dtype, p, avg", [
    (np.float32, 1.0, 1e-8), (np.float32, 1.3, -0.19999999),
    (jnp.bfloat16, 1.0, 1e-3), (np.float16, 1.0, -1e-4)])
def test_no_update_of_the_dtype_lands_on_some_averages(dtype, p, avg):
  """The counter-examples to exactness through `optax.apply_updates`: no
  update `u` of the parameter's dtype gives `p + u == avg`. Every candidate
  within 2**12 ulps of `avg - p` is tried (further ones land further away,
  `p + u` is monotonic in `u`); `ox.apply_updates` lands anyway."""
  p, avg = jnp.asarray(p, dtype), jnp.asarray(avg, dtype)
  u0 = np.asarray(avg.astype(jnp.float32) - p.astype(jnp.float32)).astype(
      p.dtype)
  # Neighbours of u0 (|u0| > 0) by their bit patterns: +k ulps of magnitude.
  offsets = np.arange(-2**12, 2**12 + 1).astype(_bits(u0).dtype)
  candidates = jnp.asarray((_bits(u0) + offsets).view(u0.dtype))
  sums = optax.apply_updates(jnp.full(candidates.shape, p), candidates)
  assert not np.any(_bits(sums) == _bits(avg))
  assert bool(jnp.any(sums < avg)) and bool(jnp.any(sums > avg))
  # An EMA that holds it (momentum 1 after the first step) overwrites
  # exactly through ox.apply_updates.
  tx = optax.chain(optax.sgd(1.0), ox.ema(1.0, 1))
  state = tx.init(p)
  state = (state[0], state[1]._replace(count=jnp.asarray(1), ema=avg))
  updates, state = tx.update(jnp.asarray(0.5, dtype), state, p)
  assert _bits(state[1].ema) == _bits(avg)
  assert _bits(optax.apply_updates(p, updates)) != _bits(avg)
  assert _bits(ox.apply_updates(p, updates, state)) == _bits(avg)


@pytest.mark.parametrize("combine", ["multi_transform", "partition", "masked"])
def test_finalize_and_overwrite_combine_every_parts_ema(combine):
  """Issue 9 item 5: under multi_transform/partition/masked each part's EMA
  replaces its own leaves (MaskedNode leaves are not averaged, a part with
  no EMA keeps its parameters), where finalize used to hit a MaskedNode
  structure error or refuse "2 EMAs"; `ox.apply_updates` overwrites each
  part on its own schedule."""
  params = {"a": jnp.ones(2), "b": jnp.full(3, 2.0), "c": jnp.full(1, 3.0),
            "n": jnp.asarray(1)}
  labels = {"a": "x", "b": "y", "c": "z", "n": "z"}
  x = ox.adam(0.1, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=2)
  y = ox.adamax(0.1, use_ema=True, ema_momentum=0.5)
  if combine == "masked":
    tx = optax.masked(x, {"a": True, "b": False, "c": False, "n": False})
    owners = {"a": lambda s: s.inner_state.ema}
  else:
    transforms = {"x": x, "y": y, "z": optax.sgd(0.1)}
    tx = getattr(optax, combine)(transforms, labels)
    owners = {"a": lambda s: s.inner_states["x"].inner_state.ema,
              "b": lambda s: s.inner_states["y"].inner_state.ema}
  state = tx.init(params)
  for step in range(3):
    g = {"a": jnp.asarray([1.0, -2.0]), "b": jnp.full(3, 0.5 + step),
         "c": jnp.ones(1), "n": jnp.asarray(0)}
    updates, state = jax.jit(tx.update)(g, state, params)
    new = ox.apply_updates(params, updates, state)
    if step == 1:  # x overwrites at its 2nd step: a becomes its average.
      np.testing.assert_array_equal(new["a"], owners["a"](state).ema["a"])
    params = new
  final = ox.finalize_variable_values(params, state)
  for key, own in owners.items():
    np.testing.assert_array_equal(final[key], own(state).ema[key])
    assert not np.array_equal(final[key], params[key])
  for key in set(params) - set(owners):
    assert final[key] is params[key]


def test_finalize_refuses_a_leaf_with_two_emas():
  tx = optax.chain(optax.sgd(0.1), ox.ema(0.5), ox.ema(0.9))
  params = {"w": jnp.ones(2)}
  with pytest.raises(ValueError, match=r"\['w'\] is averaged by two EMAs"):
    ox.finalize_variable_values(params, tx.init(params))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16],
                         ids=["bfloat16", "float16"])
@pytest.mark.parametrize("kind", ["adam", "adamax", "sgd"])
def test_low_precision_average_reads_the_stored_parameters(kind, dtype):
  """Keras averages the variable as stored: over 30 jitted steps, the
  average of a bfloat16/float16 parameter is, bit for bit,
  round(m * avg + (1 - m) * p_new) with p_new the parameter *after* its
  rounding to the dtype (m = 0 on the first step), computed in float32. An
  `astype` round trip alone let XLA average the unrounded p + u."""
  m = 0.8
  opt = getattr(ox, kind)(0.05, use_ema=True, ema_momentum=m)
  params = {"w": jnp.linspace(-1.3, 1.7, 24, dtype=jnp.float32)
            .reshape(4, 6).astype(dtype)}

  @jax.jit
  def step(params, state, g):
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state

  state = opt.init(params)
  rng = np.random.default_rng(3)
  avg = None
  for t in range(30):
    g = {"w": jnp.asarray(rng.normal(size=(4, 6)), dtype)}
    params, state = step(params, state, g)
    p_new = np.asarray(params["w"], np.float32)
    mom = np.float32(0.0 if t == 0 else m)
    want = p_new if avg is None else (mom * avg + (np.float32(1) - mom)
                                      * p_new)
    avg = np.asarray(jnp.asarray(want, jnp.float32).astype(dtype), np.float32)
    np.testing.assert_array_equal(
        np.asarray(state.ema.ema["w"], np.float32), avg)
