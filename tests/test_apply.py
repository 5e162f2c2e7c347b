"""The fused step ``params, state = ox.apply(opt, grads, state, params)``.

It must give the numbers of ``opt.update`` + ``ox.apply_updates`` bit for
bit, while doing less: no parameter write on an accumulation micro-step,
only the touched rows with ``lazy_rows``.
"""

import functools
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import optax_suite as ox  # noqa: E402
from catalog import CATALOG  # noqa: E402
from catalog import KINDS  # noqa: E402
from keras_oracle import ULPS
from keras_oracle import make_params  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402
from helpers import grad_seq  # noqa: E402
from helpers import table_params  # noqa: E402

STEPS = 12
# lazy_rows is refused by the rules that mix a leaf's rows; the fused
# accumulation step is bit-exact for the rules the catalog says.
NOT_ROW_SEPARABLE = tuple(k for k in KINDS if not CATALOG[k].row_separable)
BIT_EXACT_ACCUMULATION = tuple(
    k for k in KINDS if CATALOG[k].fused_accumulation_bit_exact)

CONFIGS = {
    "plain": {},
    "acc": dict(gradient_accumulation_steps=3),
    "ema_acc_overwrite": dict(use_ema=True, ema_momentum=0.8,
                              ema_overwrite_frequency=2,
                              gradient_accumulation_steps=3),
    "everything": dict(clipnorm=0.9, weight_decay=0.01, use_ema=True,
                       ema_momentum=0.7, ema_overwrite_frequency=3,
                       loss_scale_factor=8.0, gradient_accumulation_steps=2),
    "lazy_everything": dict(global_clipnorm=0.9, weight_decay=0.01,
                            use_ema=True, ema_overwrite_frequency=3,
                            gradient_accumulation_steps=2, lazy_rows=True),
}


def bits(tree):
  return [np.atleast_1d(np.asarray(x)).view(np.uint8)
          for x in jax.tree.leaves(tree)]


def assert_same_bits(a, b):
  for x, y in zip(bits(a), bits(b)):
    np.testing.assert_array_equal(x, y)


def assert_same_within_ulps(a, b):
  """Bit for bit but for XLA's rounding inside the fused update step: within
  the parity tolerance we hold Keras to (ULPS float32 ulps of each leaf's
  largest magnitude, `keras_oracle`). Measured per element: 3-4 ulps for
  sgd and lamb, up to 29 ulps of tiny Adafactor factors (values near 0).
  Integer leaves exactly."""
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    if np.issubdtype(x.dtype, np.floating):
      unit = float(np.spacing(np.float32(max(np.max(np.abs(x), initial=0.0),
                                             1.0))))
      np.testing.assert_allclose(x, y, rtol=0, atol=ULPS * unit)
    else:
      np.testing.assert_array_equal(x, y)


@pytest.mark.fast_cases(2)
@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("kind", KINDS)
def test_fused_step_equals_update_then_apply_updates(kind, config):
  """Parameters and state after each of 12 jitted, donated steps are the
  bits of update + apply_updates(params, updates, state) (a -0.0 parameter
  included); an optimizer that cannot take lazy rows refuses them. With
  dense accumulation the update step runs inside the fused step's `cond`,
  and XLA fuses some rules' arithmetic differently there: bit for bit for
  the rules in BIT_EXACT_ACCUMULATION, within 2 ulps for the others."""
  kw = dict(CONFIGS[config])
  if CATALOG[kind].parity_learning_rate is not None:
    kw["learning_rate"] = CATALOG[kind].parity_learning_rate
  if kw.get("lazy_rows") and kind in NOT_ROW_SEPARABLE:
    with pytest.raises(ValueError, match="lazy_rows"):
      getattr(ox, kind)(**kw)
    return
  opt = getattr(ox, kind)(**kw)
  params = table_params(0)
  params["dense"]["bias"] = params["dense"]["bias"].at[0].set(-0.0)
  grads = (grad_seq(params, STEPS) if kw.get("lazy_rows")
           else varied_grads(params, STEPS))

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def split(params, state, g):
    updates, state = opt.update(g, state, params)
    return ox.apply_updates(params, updates, state), state

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def fused_step(params, state, g):
    return ox.apply(opt, g, state, params)

  start = np.asarray(params["embed"])
  p1, s1 = jax.tree.map(jnp.copy, params), opt.init(params)
  p2, s2 = jax.tree.map(jnp.copy, params), opt.init(params)
  for g in grads:
    p1, s1 = split(p1, s1, g)
    p2, s2 = fused_step(p2, s2, g)
    if kw.get("gradient_accumulation_steps") and not kw.get("lazy_rows") and (
        kind not in BIT_EXACT_ACCUMULATION):
      assert_same_within_ulps((p1, s1), (p2, s2))
    else:
      assert_same_bits((p1, s1), (p2, s2))
  moved = np.abs(np.asarray(p2["embed"]) - start).max()
  assert moved > 1e-4


def test_micro_step_leaves_the_parameter_buffers_in_place():
  """On a micro-step the donated parameter buffers come back as the same
  buffers with the same bits (the accumulator and the EMA move). JAX pairs
  donated inputs with outputs of the same shape in order, so the step takes
  ``(params, state)`` in the order ``apply`` returns them."""
  opt = ox.adam(0.1, gradient_accumulation_steps=4, use_ema=True)
  params = make_params(1)
  state = opt.init(params)
  fused = jax.jit(lambda p, s, g: ox.apply(opt, g, s, p),
                  donate_argnums=(0, 1))
  g = varied_grads(params, 1)[0]
  before = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(params)]
  saved = bits(jax.tree.map(jnp.copy, params))  # No host view of params.
  params, state = fused(params, state, g)
  after = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(params)]
  assert before == after
  for x, y in zip(saved, bits(params)):
    np.testing.assert_array_equal(x, y)
  assert float(jnp.abs(state.inner.accumulated["dense"]["kernel"]).max()) > 0


def test_apply_runs_any_gradient_transformation():
  """A transformation without a fused step (optax's, a loss-scale wrapper)
  runs as update + apply_updates."""
  params = make_params(2)
  g = varied_grads(params, 1)[0]
  for opt in (optax.adam(0.1), ox.loss_scale_optimizer(ox.adamax(0.1))):
    state = opt.init(params)
    got, _ = ox.apply(opt, g, state, params)
    updates, _ = opt.update(g, state, params)
    assert_same_bits(got, optax.apply_updates(params, updates))


@pytest.mark.parametrize("ema", [
    dict(use_ema=True), dict(use_ema=True, ema_overwrite_frequency=10)])
def test_fused_step_with_ema_copies_no_parameter_sized_buffer(ema):
  """With the EMA on, the compiled fused step (accumulation, donated) holds no
  copy of a parameter, slot or average and no parameter-sized scratch. With
  the EMA advanced inside the step's `cond`, XLA copied every average after
  it on every call (40 copies for 40 leaves, 80 with an overwrite), which
  made the fused update step slower than the split one."""
  n, size = 6, 4099  # A size no other buffer of the step has.
  opt = ox.adam(1e-3, gradient_accumulation_steps=4, **ema)
  params = {f"p{i}": jnp.full((size,), 0.5 + i) for i in range(n)}
  fused = jax.jit(lambda p, s, g: ox.apply(opt, g, s, p),
                  donate_argnums=(0, 1))
  compiled = fused.lower(params, opt.init(params), params).compile()
  hlo = compiled.as_text()
  assert hlo.count(f"f32[{size}]") > 10 * n  # The probe sees the leaves.
  assert f"f32[{size}]{{0}} copy(" not in hlo
  assert compiled.memory_analysis().temp_size_in_bytes < 4 * size


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("overwrite", [None, 2])
@pytest.mark.parametrize("kind", ["adam", "adamax", "adagrad", "lamb"])
def test_fused_step_equals_split_for_low_precision_and_integer_leaves(
    kind, overwrite):
  """bfloat16, float16 and int32 leaves beside float32 ones, 14 steps with
  accumulation, EMA (with and without overwrite), decay and clipping: the
  fused step gives the split path's bits. The EMA averages the parameters
  as rounded to their dtype; when it did so through `astype` alone, XLA
  dropped the rounding in the split path (not in the fused one, where the
  parameters come out of a `cond`) and the bfloat16 average and, on
  overwrites, the parameter were 1 ulp apart."""
  params = {"w": jnp.linspace(-1, 1, 12).reshape(3, 4),
            "b": jnp.linspace(-0.5, 0.5, 4).astype(jnp.bfloat16),
            "h": jnp.linspace(0.1, 2, 5).astype(jnp.float16),
            "step": jnp.array([3], jnp.int32)}
  opt = getattr(ox, kind)(0.05, use_ema=True, ema_momentum=0.7,
                          ema_overwrite_frequency=overwrite,
                          gradient_accumulation_steps=3, weight_decay=0.01,
                          clipnorm=1.0)

  @jax.jit
  def split(params, state, g):
    updates, state = opt.update(g, state, params)
    return ox.apply_updates(params, updates, state), state

  fused = jax.jit(lambda p, s, g: ox.apply(opt, g, s, p))
  rng = np.random.default_rng(0)
  p1 = p2 = params
  s1 = s2 = opt.init(params)
  for _ in range(14):
    g = {k: (jnp.asarray(rng.normal(size=v.shape), v.dtype)
             if jnp.issubdtype(v.dtype, jnp.floating) else jnp.zeros_like(v))
         for k, v in params.items()}
    p1, s1 = split(p1, s1, g)
    p2, s2 = fused(p2, s2, g)
  assert_same_bits((p1, s1), (p2, s2))
  assert float(jnp.abs(p2["b"].astype(jnp.float32)
                       - params["b"].astype(jnp.float32)).max()) > 1e-2
