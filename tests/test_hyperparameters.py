"""``ox.hyperparameters`` against Keras 3's ``optimizer.learning_rate``.

For each Keras schedule class of ``keras.optimizers.schedules`` (built on
both sides from the same arguments), with and without gradient
accumulation, the learning rate read from our state under ``jax.jit`` after
every one of 25 calls equals what Keras's ``optimizer.learning_rate`` shows
after the same number of eager ``apply`` calls (Keras counts every call,
micro-steps too). Wrappers: ``loss_scale_optimizer`` reports its dynamic
scale, ``inject_hyperparams`` the value the user wrote into the state,
``multi_optimizer`` one prefixed entry per inner optimizer.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import optax_suite as ox  # noqa: E402
from catalog import CATALOG  # noqa: E402
from catalog import KINDS  # noqa: E402
from keras_oracle import build_keras  # noqa: E402
from keras_oracle import make_params  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

STEPS = 25
KS = keras.optimizers.schedules
# Every Keras schedule class, with arguments that move the rate each call.
SCHEDULES = {
    "ExponentialDecay": dict(initial_learning_rate=0.1, decay_steps=4,
                             decay_rate=0.7, staircase=True),
    "PiecewiseConstantDecay": dict(boundaries=[5, 11, 20],
                                   values=[0.1, 0.03, 0.2, 0.01]),
    "PolynomialDecay": dict(initial_learning_rate=0.1, decay_steps=8,
                            end_learning_rate=0.005, power=2.0, cycle=True),
    "InverseTimeDecay": dict(initial_learning_rate=0.1, decay_steps=3,
                             decay_rate=0.5),
    "CosineDecay": dict(initial_learning_rate=0.0, decay_steps=17,
                        alpha=0.1, warmup_target=0.1, warmup_steps=8),
    "CosineDecayRestarts": dict(initial_learning_rate=0.1,
                                first_decay_steps=5, t_mul=1.5, m_mul=0.8,
                                alpha=0.05),
}
ULPS = 4


@pytest.mark.slow
@pytest.mark.parametrize("accumulation", [None, 3])
@pytest.mark.parametrize("class_name", sorted(SCHEDULES))
def test_learning_rate_matches_keras_after_each_call(class_name,
                                                     accumulation):
  """After each of 25 calls, our learning rate equals Keras's shown one."""
  arguments = SCHEDULES[class_name]
  params = make_params(0)
  grads = varied_grads(params, STEPS, seed=1)
  k_opt, variables = build_keras(
      "adam", params, learning_rate=getattr(KS, class_name)(**arguments),
      gradient_accumulation_steps=accumulation)
  opt = ox.adam(ox.schedules.from_config(arguments, class_name=class_name),
                gradient_accumulation_steps=accumulation)
  state = opt.init(params)
  read = jax.jit(lambda s: ox.hyperparameters(opt, s))
  step = jax.jit(lambda g, s, p: opt.update(g, s, p)[1])
  worst, seen = 0.0, set()
  for g in grads:
    k_opt.apply(jax.tree.leaves(g), variables)
    state = step(g, state, params)
    ours = read(state)["learning_rate"]
    assert ours.dtype == jnp.float32 and ours.shape == ()
    theirs = np.float32(k_opt.learning_rate)
    seen.add(float(theirs))
    worst = max(worst, abs(float(ours) - float(theirs))
                / float(np.spacing(np.float32(max(abs(theirs), 1e-30)))))
  assert len(seen) >= 4, seen  # the schedule really moved.
  assert worst <= ULPS, (class_name, accumulation, worst)


# Base options with a number, on for the every-optimizer run below.
BASE = dict(clipnorm=0.7, weight_decay=0.02, use_ema=True, ema_momentum=0.95,
            loss_scale_factor=4.0)


def _keras_numbers(k_opt) -> dict:
  """Keras's numeric hyperparameters: its config's numbers, and the
  learning rate its `optimizer.learning_rate` shows now."""
  numbers = {n: np.float32(v) for n, v in k_opt.get_config().items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
  numbers["learning_rate"] = np.float32(k_opt.learning_rate)
  return numbers


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("kind", KINDS)
def test_every_hyperparameter_matches_keras_for_every_optimizer(kind):
  """For each catalog optimizer, its own arguments drawn at random and the
  numeric base options on, with a decaying schedule and accumulation over 3
  calls: after each of 25 calls the dict has exactly Keras's numeric
  hyperparameters (its config's numbers and the learning rate), each equal
  to Keras's as float32. (Accumulation's call count is the base's, the same
  for every rule; `test_learning_rate_matches_keras_after_each_call` runs
  every schedule with and without it.)"""
  accumulation = 3
  own = CATALOG[kind].random_own(np.random.default_rng(7))
  schedule = dict(initial_learning_rate=0.05, decay_steps=4, decay_rate=0.7)
  arguments = {**BASE, **own}  # `own` may set weight_decay too.
  # Two small leaves: the hyperparameters do not depend on the shapes.
  params = {"kernel": np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
            "bias": np.zeros(2, np.float32)}
  grads = varied_grads(params, STEPS, seed=2)
  k_opt, variables = build_keras(
      kind, params, learning_rate=KS.ExponentialDecay(**schedule),
      gradient_accumulation_steps=accumulation, **arguments)
  opt = getattr(ox, kind)(
      ox.schedules.from_config(schedule, class_name="ExponentialDecay"),
      gradient_accumulation_steps=accumulation, **arguments)
  state = opt.init(params)
  read = jax.jit(lambda s: ox.hyperparameters(opt, s))
  step = jax.jit(lambda g, s, p: opt.update(g, s, p)[1])
  # Keras's step jitted (its eager `apply` takes over a second a call);
  # its variables are written back so that `optimizer.learning_rate` reads
  # the iterations after the same calls.
  keras_step = jax.jit(k_opt.stateless_apply)
  train_vars = [v.value for v in variables]
  rates = set()
  for call, g in enumerate(grads):
    opt_vars = [v.value for v in k_opt.variables]
    train_vars, opt_vars = keras_step(opt_vars, jax.tree.leaves(g),
                                      train_vars)
    for variable, value in zip(k_opt.variables, opt_vars):
      variable.assign(value)
    state = step(g, state, params)
    ours, theirs = read(state), _keras_numbers(k_opt)
    assert sorted(ours) == sorted(theirs), (call, kind, sorted(ours),
                                            sorted(theirs))
    for name, value in ours.items():
      assert value.dtype == jnp.float32 and value.shape == (), name
      np.testing.assert_allclose(value, theirs[name], rtol=2e-7,
                                 err_msg=f"{kind} {name} after call {call}")
    rates.add(float(theirs["learning_rate"]))
  assert len(rates) >= 4, rates  # the schedule really moved.


def test_base_options_and_optax_schedule():
  """Every numeric argument is there as float32; an optax schedule is
  evaluated at the call count (micro-steps included)."""
  opt = ox.sgd(optax.linear_schedule(1.0, 0.0, 10), momentum=0.5,
               weight_decay=0.01, gradient_accumulation_steps=2)
  params = jnp.zeros(2)
  state = opt.init(params)
  for _ in range(3):
    _, state = opt.update(jnp.ones(2), state, params)
  h = jax.jit(lambda s: ox.hyperparameters(opt, s))(state)
  assert float(h["learning_rate"]) == pytest.approx(0.7)
  assert float(h["momentum"]) == np.float32(0.5)
  assert float(h["weight_decay"]) == np.float32(0.01)
  assert all(v.dtype == jnp.float32 for v in h.values())


def test_loss_scale_reports_dynamic_scale():
  """After a non-finite gradient the reported scale is halved."""
  opt = ox.loss_scale_optimizer(ox.adam(0.1), initial_scale=64.0)
  params = jnp.zeros(2)
  state = opt.init(params)
  _, state = opt.update(jnp.array([jnp.inf, 1.0]), state, params)
  h = ox.hyperparameters(opt, state)
  assert float(h["dynamic_scale"]) == 32.0
  assert float(h["learning_rate"]) == np.float32(0.1)


def test_inject_hyperparams_reports_the_changed_value():
  """A value written into state.hyperparams is the one reported."""
  opt = ox.inject_hyperparams(ox.adam)(learning_rate=0.1)
  state = opt.init(jnp.zeros(2))
  state.hyperparams["learning_rate"] = jnp.asarray(0.05, jnp.float32)
  assert float(ox.hyperparameters(opt, state)["learning_rate"]) == (
      np.float32(0.05))


def test_multi_optimizer_one_entry_per_inner_optimizer():
  """Each inner optimizer's learning rate, prefixed with its label."""
  m = ox.OptimizerMap(ox.sgd(0.5))
  m["b"] = ox.adam(0.01)
  opt = ox.multi_optimizer(m)
  params = {"a": jnp.zeros(2), "b": jnp.zeros(2)}
  state = opt.init(params)
  h = ox.hyperparameters(opt, state)
  assert float(h["0/learning_rate"]) == np.float32(0.01)
  assert float(h["1/learning_rate"]) == np.float32(0.5)
