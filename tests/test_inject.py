"""``optax.inject_hyperparams`` around the four factories.

What is proved here:

* every number Keras lets a user change between steps (``learning_rate``,
  the betas, ``rho``, ``momentum``, ``epsilon``, ``weight_decay``) can be
  changed in ``state.hyperparams`` between jitted steps without a retrace
  (a Python counter in the step function counts traces), and the numbers
  follow Keras 3 run with the same values set on the Keras optimizer between
  the same steps;
* with plain ``optax.inject_hyperparams`` the structural integers
  (``gradient_accumulation_steps``, ``ema_overwrite_frequency``) are injected
  as int32 arrays, and the optimizers still give Keras's numbers;
* :func:`optax_suite.inject_hyperparams` keeps flags, structural integers,
  the weight-decay mask (a callable) and a zero-argument learning rate
  static by itself, and gives the same numbers as the plain factory.

Keras comparisons use ``keras_oracle.assert_trajectories_match`` with the
tolerance for injected hyperparameters (``ULPS_INJECTED``, derived there).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import optax_suite as ox  # noqa: E402
from keras_oracle import FAR  # noqa: E402
from keras_oracle import ULPS_INJECTED  # noqa: E402
from keras_oracle import assert_trajectories_match  # noqa: E402
from keras_oracle import build_keras  # noqa: E402
from keras_oracle import make_params  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import ours_trajectory  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

STEPS = 27
CHANGE_AT = (9, 18)  # steps before which the hyperparameters change.

# factory, fixed arguments, and the values taken by the injected numbers in
# the three stretches of the run.
CASES = {
    "adam": (ox.adam, dict(amsgrad=True), [
        dict(learning_rate=0.03, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
             weight_decay=0.05),
        dict(learning_rate=0.01, beta_1=0.5, beta_2=0.9, epsilon=1e-3,
             weight_decay=0.2),
        dict(learning_rate=0.05, beta_1=0.8, beta_2=0.99, epsilon=1e-7,
             weight_decay=0.0),
    ]),
    "adamax": (ox.adamax, {}, [
        dict(learning_rate=0.02, beta_1=0.9, beta_2=0.999, weight_decay=0.1),
        dict(learning_rate=0.08, beta_1=0.6, beta_2=0.8, weight_decay=0.01),
        dict(learning_rate=0.005, beta_1=0.95, beta_2=0.9, weight_decay=0.3),
    ]),
    "adadelta": (ox.adadelta, {}, [
        dict(learning_rate=1.0, rho=0.95, epsilon=1e-6, weight_decay=0.02),
        dict(learning_rate=3.0, rho=0.5, epsilon=1e-4, weight_decay=0.1),
        dict(learning_rate=0.5, rho=0.9, epsilon=1e-6, weight_decay=0.0),
    ]),
    "rmsprop": (ox.rmsprop, dict(centered=True), [
        dict(learning_rate=0.01, rho=0.9, momentum=0.5, weight_decay=0.1),
        dict(learning_rate=0.03, rho=0.6, momentum=0.9, weight_decay=0.02),
        dict(learning_rate=0.002, rho=0.95, momentum=0.1, weight_decay=0.2),
    ]),
}
BASE = dict(gradient_accumulation_steps=2, use_ema=True, ema_momentum=0.8,
            ema_overwrite_frequency=4)


def _stretch(step):
  return sum(step >= c for c in CHANGE_AT)


def _keras_run(kind, fixed, values, params, grads):
  """Keras, with the values of each stretch set on the optimizer before it.

  Keras reads its betas, ``rho``, ``momentum``, ``epsilon`` and
  ``weight_decay`` as Python attributes, so each stretch gets a fresh
  ``jax.jit`` of ``stateless_apply``; the learning rate is a Keras variable,
  set in the carried optimizer variables.
  """
  opt, variables = build_keras(kind, params, **fixed, **BASE, **values[0])
  treedef = jax.tree.structure(params)
  lr_index = [v.name for v in opt.variables].index("learning_rate")
  train_vars = [v.value for v in variables]
  opt_vars = [v.value for v in opt.variables]
  out = []
  for stretch, start in enumerate((0,) + CHANGE_AT):
    stop = (CHANGE_AT + (len(grads),))[stretch]
    for name, value in values[stretch].items():
      if name == "learning_rate":
        opt_vars[lr_index] = jnp.asarray(value, opt_vars[lr_index].dtype)
      else:
        setattr(opt, name, value)
    step = jax.jit(lambda o, t, g: opt.stateless_apply(o, g, t))
    for g in grads[start:stop]:
      train_vars, opt_vars = step(opt_vars, train_vars, jax.tree.leaves(g))
      out.append(jax.tree.unflatten(treedef,
                                    [np.asarray(v) for v in train_vars]))
  return out


def _jitted_step(opt):
  """A jitted training step, and the list it appends to on every trace."""
  traces = []

  @jax.jit
  def step(params, state, grads):
    traces.append(1)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  return step, traces


def _injected_run(opt, values, params, grads, jitted=None):
  """Jitted steps, the hyperparameters set in the state; counts the traces."""
  step, traces = jitted or _jitted_step(opt)
  state = opt.init(params)
  out = []
  for t, g in enumerate(grads):
    for name, value in values[_stretch(t)].items():
      old = state.hyperparams[name]
      state.hyperparams[name] = jnp.asarray(value, old.dtype)
    params, state = step(params, state, g)
    out.append(params)
  return out, state, len(traces)


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("kind", sorted(CASES))
def test_injected_hyperparameters_change_without_retrace_as_in_keras(kind):
  factory, fixed, values = CASES[kind]
  params = make_params(1)
  grads = varied_grads(params, STEPS, seed=1)
  opt = optax.inject_hyperparams(factory)(**fixed, **BASE, **values[0])
  jitted = _jitted_step(opt)
  got, state, traces = _injected_run(opt, values, params, grads, jitted)
  # Plain optax injects the structural integers as int32 arrays; the
  # optimizers cope with them traced.
  assert state.hyperparams["gradient_accumulation_steps"].dtype == jnp.int32
  assert state.hyperparams["ema_overwrite_frequency"].dtype == jnp.int32
  assert traces == 1
  expected = _keras_run(kind, fixed, values, params, grads)
  assert_trajectories_match(expected, got, STEPS, ulps=ULPS_INJECTED)
  # The changes matter: keeping the first values all along is far off.
  frozen, _, traces = _injected_run(opt, values[:1] * 3, params, grads,
                                    jitted)
  assert traces == 1
  assert max_deviation(expected, frozen) > FAR


def test_wrapper_keeps_structure_static_and_matches_the_plain_factory():
  """`ox.inject_hyperparams` needs no `static_args` for masks or flags."""
  params = make_params(2)
  grads = varied_grads(params, STEPS, seed=2)
  mask = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)  # kernels only.
  sched = ox.schedules.cosine_decay(0.05, 20, warmup_target=0.1,
                                    warmup_steps=5)
  kwargs = dict(learning_rate=sched, amsgrad=True, weight_decay=0.1,
                weight_decay_mask=mask, gradient_accumulation_steps=3,
                use_ema=True, ema_overwrite_frequency=2)
  opt = ox.inject_hyperparams(ox.adam)(**kwargs)
  state = opt.init(params)
  assert sorted(state.hyperparams) == [
      "beta_1", "beta_2", "ema_momentum", "epsilon", "learning_rate",
      "weight_decay"]
  got, _ = ours_trajectory(opt, params, grads)
  plain, _ = ours_trajectory(ox.adam(**kwargs), params, grads)
  # The schedule is evaluated by optax at its own count of calls, which is
  # the count the factory's own schedule sees: the same learning rates. (The
  # betas are float32 arrays once injected, so `1 - beta_1` rounds
  # differently from the Python constant: a few ulps over the run.)
  assert max_deviation(plain, got) <= 1e-5
  # By hand, plain optax needs `static_args` for the callable mask.
  by_hand = optax.inject_hyperparams(ox.adam, static_args=("weight_decay_mask",
                                                           ))(**kwargs)
  by_hand_run, _ = ours_trajectory(by_hand, params, grads)
  assert max_deviation(by_hand_run, got) == 0


def test_wrapper_keeps_a_zero_argument_learning_rate_static():
  params = make_params(3)
  grads = varied_grads(params, STEPS, seed=3)
  lr = lambda: 0.02
  opt = ox.inject_hyperparams(ox.rmsprop)(lr, momentum=0.5, weight_decay=0.1)
  state = opt.init(params)
  assert "learning_rate" not in state.hyperparams
  assert "momentum" in state.hyperparams
  got, _ = ours_trajectory(opt, params, grads)
  plain, _ = ours_trajectory(ox.rmsprop(lr, momentum=0.5, weight_decay=0.1),
                             params, grads)
  assert_trajectories_match(plain, got, STEPS, ulps=ULPS_INJECTED)
  # Plain optax would call it with the step count, as a schedule.
  with pytest.raises(TypeError):
    optax.inject_hyperparams(ox.rmsprop)(lr).init(params)


def test_wrapper_keeps_schedule_free_warmup_steps_static():
  """ScheduleFreeAdamW's `warmup_steps` is an integer step count: injected,
  it would become a float32 array, which the factory refuses. It stays
  static, and the warmup runs as in the plain factory."""
  params = make_params(4)
  grads = varied_grads(params, STEPS, seed=4)
  kwargs = dict(learning_rate=0.05, warmup_steps=7, weight_decay=0.01)
  opt = ox.inject_hyperparams(ox.schedule_free_adamw)(**kwargs)
  state = opt.init(params)
  assert "warmup_steps" not in state.hyperparams
  assert "learning_rate" in state.hyperparams
  got, _ = ours_trajectory(opt, params, grads)
  plain, _ = ours_trajectory(ox.schedule_free_adamw(**kwargs), params, grads)
  assert_trajectories_match(plain, got, STEPS, ulps=ULPS_INJECTED)
  # The warmup acts: without it the trajectory is far from this one.
  no_warmup, _ = ours_trajectory(
      ox.schedule_free_adamw(**dict(kwargs, warmup_steps=0)), params, grads)
  assert max_deviation(no_warmup, got) > FAR


def test_wrapper_changes_learning_rate_without_retrace():
  params = make_params(4)
  grads = varied_grads(params, STEPS, seed=4)
  values = [dict(learning_rate=0.01), dict(learning_rate=0.1),
            dict(learning_rate=0.0)]
  opt = ox.inject_hyperparams(ox.adamax)(
      0.01, weight_decay=0.1, weight_decay_mask=lambda p: jax.tree.map(
          lambda _: True, p))
  got, _, traces = _injected_run(opt, values, params, grads)
  assert traces == 1
  # With learning rate 0 (and so no decay) the last stretch does not move.
  np.testing.assert_array_equal(jax.tree.leaves(got[-1])[0],
                                jax.tree.leaves(got[CHANGE_AT[1] - 1])[0])
  assert not np.array_equal(jax.tree.leaves(got[CHANGE_AT[1] - 1])[0],
                            jax.tree.leaves(got[CHANGE_AT[0] - 1])[0])


def _bf16_run(opt, params, grads):
  """Jitted steps; the parameters and the EMA (finalized) after each."""
  state = opt.init(params)

  @jax.jit
  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    return params, state, ox.finalize_variable_values(params, state)

  out = []
  for g in grads:
    params, state, average = step(params, state, g)
    out.append((params, average))
  return out, state


@pytest.mark.parametrize("factory,kwargs", [
    (ox.adam, dict(learning_rate=0.01, beta_2=0.999)),
    (ox.rmsprop, dict(learning_rate=0.01, rho=0.95, momentum=0.9)),
    (ox.adadelta, dict(learning_rate=1.0, rho=0.95)),
    (ox.adamax, dict(learning_rate=0.01, beta_2=0.999)),
], ids=["adam", "rmsprop", "adadelta", "adamax"])
@pytest.mark.fast_cases(1)
def test_injected_hyperparameters_stay_float32_with_bfloat16_params(
    factory, kwargs):
  """bfloat16 would round beta_2=0.999 to 1 (refused) and rho=0.95 to
  0.94921875 (silently wrong): injected numbers stay float32 and give the
  plain factory's numbers bit for bit, parameters and EMA."""
  kwargs = dict(kwargs, use_ema=True, ema_momentum=0.999, weight_decay=0.01)
  params = make_params(7, jnp.bfloat16)
  grads = varied_grads(params, STEPS, seed=7)
  expected, _ = _bf16_run(factory(**kwargs), params, grads)
  for opt in (ox.inject_hyperparams(factory)(**kwargs),
              optax.inject_hyperparams(factory,
                                       hyperparam_dtype=jnp.float32)(**kwargs)):
    got, state = _bf16_run(opt, params, grads)
    assert {str(v.dtype) for v in state.hyperparams.values()
            if jnp.issubdtype(v.dtype, jnp.floating)} == {"float32"}
    assert jax.tree.leaves(got[-1][0])[0].dtype == jnp.bfloat16
    for t, (e, g) in enumerate(zip(expected, got)):
      for x, y in zip(jax.tree.leaves(e), jax.tree.leaves(g)):
        np.testing.assert_array_equal(np.asarray(y, np.float32),
                                      np.asarray(x, np.float32),
                                      err_msg=f"step {t + 1}")


def test_injected_rmsprop_momentum_has_one_state_structure_and_always_acts():
  """An injected momentum of 0 keeps its slot whether `init` runs eagerly or
  under jit (it was dropped eagerly only), so setting it to 0.9 later acts:
  both runs equal `rmsprop(momentum=0.9)` from the start."""
  params = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}
  grads = varied_grads(params, 5, seed=12)
  opt = ox.inject_hyperparams(ox.rmsprop)(learning_rate=0.1, momentum=0.0)
  eager, jitted = opt.init(params), jax.jit(opt.init)(params)
  assert jax.tree.structure(eager) == jax.tree.structure(jitted)
  assert eager.inner_state.inner[1].momentum is not None
  runs = []
  for state in (eager, jitted):
    state.hyperparams["momentum"] = jnp.asarray(0.9, jnp.float32)
    step = jax.jit(opt.update)
    p = params
    for g in grads:
      updates, state = step(g, state, p)
      p = optax.apply_updates(p, updates)
    runs.append([p])
  expected, _ = ours_trajectory(ox.rmsprop(0.1, momentum=0.9), params, grads)
  for got in runs:
    assert max_deviation(expected[-1:], got) <= 1e-6
  no_momentum, _ = ours_trajectory(ox.rmsprop(0.1), params, grads)
  assert max_deviation(no_momentum[-1:], runs[0]) > 0.1
  # A number 0 keeps Keras's layout: no slot.
  assert ox.rmsprop(0.1).init(params).inner[1].momentum is None


GUIDE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "docs", "guides", "schedules_and_configs.md")


def _guide_no_retrace_value():
  """The value the guide sets a learning rate to, promising no retrace."""
  with open(GUIDE) as f:
    lines = [line for line in f if "# no retrace" in line]
  assert len(lines) == 1, lines
  expression = lines[0].split("=", 1)[1].split("#", 1)[0].strip()
  return expression, eval(expression, {"jnp": jnp})  # pylint: disable=eval-used


@pytest.mark.parametrize("inject", [ox.inject_hyperparams,
                                    optax.inject_hyperparams],
                         ids=["ox", "optax"])
def test_guide_form_of_setting_a_hyperparameter_does_not_retrace(inject):
  """A jitted step sees each new learning rate without tracing again when it
  is set as docs/guides/schedules_and_configs.md shows (float32, not weak-typed). A weak-typed scalar,
  `jnp.asarray(3e-4)`, does retrace once, in plain optax too: the trace
  counter can see the difference."""
  expression, value = _guide_no_retrace_value()
  params = make_params(8)
  grads = varied_grads(params, 4, seed=8)
  opt = inject(ox.rmsprop)(learning_rate=1e-3, momentum=0.9)
  for setter, expected_traces in (
      (lambda v: eval(expression.replace("3e-4", repr(v)),  # noqa: S307
                      {"jnp": jnp}), 1),
      (lambda v: jnp.asarray(v), 2)):
    step, traces = _jitted_step(opt)
    state = opt.init(params)
    p = params
    for t, g in enumerate(grads):
      p, state = step(p, state, g)
      state.hyperparams["learning_rate"] = setter(3e-4 * (t + 1))
    assert len(traces) == expected_traces, (expression, expected_traces)
  assert float(value) == pytest.approx(3e-4)
  assert float(state.hyperparams["learning_rate"]) == pytest.approx(1.2e-3)
