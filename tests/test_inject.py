"""``optax.inject_hyperparams`` around every optimizer of tests/catalog.py.

What is proved here:

* every number Keras lets a user change between steps (``learning_rate``,
  ``weight_decay`` and each optimizer's own float arguments: the betas,
  ``rho``, ``momentum``, ``epsilon``, Ftrl's strengths, Muon's rates, ...)
  can be changed in ``state.hyperparams`` between jitted steps without a
  retrace (a Python counter in the step function counts traces), and the
  numbers follow Keras 3 run with the same values set on the Keras optimizer
  between the same steps;
* with plain ``optax.inject_hyperparams`` the structural integers
  (``gradient_accumulation_steps``, ``ema_overwrite_frequency``) are injected
  as int32 arrays, and the optimizers still give Keras's numbers;
* :func:`optax_suite.inject_hyperparams` keeps flags, structural integers,
  the weight-decay mask (a callable) and a zero-argument learning rate
  static by itself, and gives the same numbers as the plain factory.

Keras comparisons use ``keras_oracle.assert_trajectories_match``. Keras is
handed the float32 numbers the injected state holds (see ``_keras_run``),
so they hold to ``ULPS``; comparisons of an injected run with the plain
factory (Python floats) use the tolerance for injected hyperparameters
(``ULPS_INJECTED``, derived in keras_oracle.py).
"""

import os
import re
import zlib

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import optax_suite as ox  # noqa: E402
from catalog import CATALOG  # noqa: E402
from catalog import KINDS  # noqa: E402
from keras_oracle import FAR  # noqa: E402
from keras_oracle import ULPS  # noqa: E402
from keras_oracle import ULPS_INJECTED  # noqa: E402
from keras_oracle import assert_trajectories_match  # noqa: E402
from keras_oracle import build_keras  # noqa: E402
from keras_oracle import keras_trajectory  # noqa: E402
from keras_oracle import make_params  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import ours_trajectory  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

STEPS = 27
CHANGE_AT = (9, 18)  # steps before which the hyperparameters change.

WEIGHT_DECAYS = (0.05, 0.2, 0.0)  # in the three stretches, every optimizer.


def _case(kind):
  """(factory, fixed arguments, the injected numbers' values in the three
  stretches of the run) for one optimizer of tests/catalog.py.

  Three draws of the entry's `random_own`: its flags (amsgrad, centered,
  nesterov, ...) are the first draw's, fixed; every own argument that is a
  float in all three draws is injected and takes the three values in turn,
  with the learning rates of the entry's `learning_rates` and the weight
  decays above; integers and arguments that may be None keep their
  defaults. Keras builds its slots from the values at `build`, and a value
  of 0 there can leave a slot out (SGD's and RMSprop's momentum), so the
  first stretch draws no 0.
  """
  entry = CATALOG[kind]
  rng = np.random.default_rng(zlib.crc32(kind.encode()))
  first = entry.random_own(rng)
  while any(not isinstance(v, bool) and v == 0 for v in first.values()):
    first = entry.random_own(rng)
  draws = [first, entry.random_own(rng), entry.random_own(rng)]
  fixed = {k: v for k, v in first.items() if isinstance(v, bool)}
  floats = [k for k in first if all(
      isinstance(d[k], float) and not isinstance(d[k], bool) for d in draws)]
  lrs = entry.learning_rates
  values = [dict({k: float(d[k]) for k in floats},
                 learning_rate=lrs[i % len(lrs)], weight_decay=WEIGHT_DECAYS[i])
            for i, d in enumerate(draws)]
  return getattr(ox, kind), fixed, values


CASES = {kind: _case(kind) for kind in KINDS}
BASE = dict(gradient_accumulation_steps=2, use_ema=True, ema_momentum=0.8,
            ema_overwrite_frequency=4)


def _stretch(step):
  return sum(step >= c for c in CHANGE_AT)


def _float32(values):
  """`values` with each float as the float32 number the injected state
  holds (`jnp.asarray(value, jnp.float32)`); other values as they are."""
  return {k: float(np.float32(v)) if isinstance(v, float) else v
          for k, v in values.items()}


def _keras_run(kind, fixed, values, params, grads, base=BASE):
  """Keras, with the values of each stretch set on the optimizer before it.

  Keras reads its betas, ``rho``, ``momentum``, ``epsilon`` and
  ``weight_decay`` as Python attributes, so each stretch gets a fresh
  ``jax.jit`` of ``stateless_apply``; the learning rate is a Keras variable,
  set in the carried optimizer variables.

  Keras is given the float32 numbers the injected state holds, so that
  both sides compute from the same numbers (to ``ULPS``). From the Python
  floats, ``1 - beta_2`` for a beta_2 near 1 rounds differently (0.999 is
  0.99900001 in float32, ``1 - beta_2`` 1.3e-5 off relatively), which is
  harmless while beta_2 stays (the bias correction rounds alike) but a
  change of beta_2 after a stretch at 0.999 turns it into tens of ulps
  (measured: 33 for Muon's Adam branch, 11 for AdamW).
  """
  values = [_float32(v) for v in values]
  opt, variables = build_keras(kind, params, **fixed, **_float32(base),
                               **values[0])
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
  assert_trajectories_match(expected, got, STEPS, ulps=ULPS)
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
  assert_trajectories_match(plain, got, STEPS, ulps=ULPS_INJECTED)
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
  static, and over 25 steps the warmup runs as in Keras's ScheduleFreeAdamW
  and in the plain factory."""
  params = make_params(4)
  grads = varied_grads(params, STEPS, seed=4)
  kwargs = dict(learning_rate=0.05, warmup_steps=7, weight_decay=0.01)
  opt = ox.inject_hyperparams(ox.schedule_free_adamw)(**kwargs)
  state = opt.init(params)
  assert "warmup_steps" not in state.hyperparams
  assert "learning_rate" in state.hyperparams
  got, _ = ours_trajectory(opt, params, grads)
  keras_run, _ = keras_trajectory("schedule_free_adamw", params, grads,
                                  **kwargs)
  assert_trajectories_match(keras_run, got, STEPS, ulps=ULPS_INJECTED)
  plain, _ = ours_trajectory(ox.schedule_free_adamw(**kwargs), params, grads)
  assert_trajectories_match(plain, got, STEPS, ulps=ULPS_INJECTED)
  # The warmup acts: without it the trajectory is far from this one.
  no_warmup, _ = ours_trajectory(
      ox.schedule_free_adamw(**dict(kwargs, warmup_steps=0)), params, grads)
  assert max_deviation(no_warmup, got) > FAR


@pytest.mark.parametrize("bad", [2.5, -1, "7", True])
def test_wrapper_refuses_a_bad_schedule_free_warmup_steps(bad):
  """Static, `warmup_steps` is checked as the factory checks it: a
  ValueError naming it and the value, at construction."""
  with pytest.raises(ValueError, match=re.escape(
      f"`warmup_steps` must be an integer >= 0. Received: "
      f"warmup_steps={bad!r}")):
    ox.inject_hyperparams(ox.schedule_free_adamw)(warmup_steps=bad)


def test_wrapper_refuses_a_bad_injected_number_at_construction():
  """An injected number is checked when the optimizer is made, as the
  factory checks it (optax builds the factory only at `init`)."""
  with pytest.raises(ValueError, match=re.escape(
      "`beta_1` must be in the range [0, 1). Received: beta_1=1.5")):
    ox.inject_hyperparams(ox.adam)(beta_1=1.5)


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
  # Keras's Adamax with its learning rate set to the same values between
  # the same steps (a mask of all True is Keras's default: every leaf).
  expected = _keras_run("adamax", {}, values, params, grads,
                        base=dict(weight_decay=0.1))
  assert_trajectories_match(expected, got, STEPS, ulps=ULPS)
  # With learning rate 0 (and so no decay) the last stretch does not move.
  for leaf_now, leaf_then in zip(jax.tree.leaves(got[-1]),
                                 jax.tree.leaves(got[CHANGE_AT[1] - 1])):
    np.testing.assert_array_equal(leaf_now, leaf_then)


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


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.fast_cases(1)
def test_injected_hyperparameters_stay_float32_with_bfloat16_params(kind):
  """bfloat16 would round beta_2=0.999 to 1 (refused) and rho=0.95 to
  0.94921875 (silently wrong): injected numbers stay float32 and give the
  numbers of the plain factory given the same float32 numbers bit for bit,
  parameters and EMA. (Given the Python floats it differs by roundings:
  `1 - beta_1` from 0.9 is not `1 - beta_1` from float32 0.9, which moved
  one bfloat16 element of Lamb's trust-ratio step by one ulp.) Each
  optimizer at its catalog's low-precision configuration (`Entry.dtype_run`)
  and its first draw of injected numbers above, at defaults otherwise."""
  factory = getattr(ox, kind)
  _, fixed, values = CASES[kind]
  kwargs = dict(values[0], **CATALOG[kind].dtype_run, **fixed, use_ema=True,
                ema_momentum=0.999, weight_decay=0.01)
  params = make_params(7, jnp.bfloat16)
  grads = varied_grads(params, STEPS, seed=7)
  expected, _ = _bf16_run(factory(**_float32(kwargs)), params, grads)
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
  for state in (eager, jitted):  # a slot of zeros for every parameter
    momentum = state.inner_state.inner[1].momentum
    assert jax.tree.structure(momentum) == jax.tree.structure(params)
    for slot, p in zip(jax.tree.leaves(momentum), jax.tree.leaves(params)):
      np.testing.assert_array_equal(slot, np.zeros_like(p))
  runs = []
  for state in (eager, jitted):
    state.hyperparams["momentum"] = jnp.asarray(0.9, jnp.float32)
    step = jax.jit(opt.update)
    p, run = params, []
    for g in grads:
      updates, state = step(g, state, p)
      p = optax.apply_updates(p, updates)
      run.append(p)
    runs.append(run)
  expected, _ = ours_trajectory(ox.rmsprop(0.1, momentum=0.9), params, grads)
  for got in runs:
    assert_trajectories_match(expected, got, len(grads), ulps=ULPS_INJECTED)
  # The control: without the momentum the run is far from these.
  no_momentum, _ = ours_trajectory(ox.rmsprop(0.1), params, grads)
  assert max_deviation(no_momentum, runs[0]) > FAR
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
