"""Resuming a Keras run in JAX: ``from_keras`` / ``state_from_keras``.

Each case runs Keras 3 (``stateless_apply`` under ``jax.jit``) for ``K``
steps, imports its optimizer variables after step ``k`` (a micro-step in the
middle of an accumulation, so the accumulators, the raw call count and the
update-step count all matter), runs the remaining ``K - k`` steps with
optax_suite from Keras's parameters at step ``k``, and compares with Keras's
own steps ``k + 1 .. K`` (``keras_oracle.assert_trajectories_match``).
The cases are every own configuration of every optimizer in
``tests/catalog.py`` (``Entry.own``: amsgrad, momentum and centered,
Nesterov, Muon's two decays, ...), each with EMA (with overwrite), gradient
accumulation and weight decay on (unless the configuration sets its own),
and one variant in turn: a schedule, Keras's weight-decay exclusions by name
or by variable (the imported optimizer decays exactly the leaves Keras
does), a learning rate changed in Keras before the import, or none. Two more
tests import into ``inject_hyperparams``. A control resumes from a fresh
state instead, and is far off: the import is what makes the runs agree.
"""

import os
import re

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
from keras_oracle import FAR  # noqa: E402
from keras_oracle import KERAS_CLASSES  # noqa: E402
from keras_oracle import ULPS  # noqa: E402
from keras_oracle import ULPS_INJECTED  # noqa: E402
from keras_oracle import assert_trajectories_match  # noqa: E402
from keras_oracle import leaf_names  # noqa: E402
from keras_oracle import make_params  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

TOTAL, RESUME_AT = 28, 13  # 13 = 4 updates of 3 calls + 1 micro-step.
BASE = dict(gradient_accumulation_steps=3, weight_decay=0.05, use_ema=True,
            ema_momentum=0.8, ema_overwrite_frequency=3)

# Each of the catalog's own configurations of each optimizer (tests/catalog.py
# `Entry.own`, at the entry's parity learning rate when it sets none), with
# one of these variants in turn over the whole list, so that every variant
# meets several optimizers.
VARIANTS = ("schedule", "exclude-by-name", "exclude-by-variable",
            "new-learning-rate", "plain")
EXCLUDED_NAMES = ["bias"]  # Keras's `var_names`: searched in variable.name.
EXCLUDED_INDEX = 1  # Keras's `var_list`: the second trainable variable.


def _case(kind, own, variant):
  """(kind, Keras options, extra) of one case: `extra` holds the Keras
  exclusions (var_names / var_list indices) and a new learning rate."""
  options = dict(BASE, **own)
  lr = options.setdefault("learning_rate",
                          CATALOG[kind].parity_learning_rate or 0.01)
  extra = {}
  if variant == "schedule":
    options["learning_rate"] = keras.optimizers.schedules.CosineDecay(
        lr, 20, warmup_target=5 * lr, warmup_steps=6)
  elif variant == "exclude-by-name":
    extra["var_names"] = EXCLUDED_NAMES
  elif variant == "exclude-by-variable":
    extra["var_list"] = [EXCLUDED_INDEX]
  elif variant == "new-learning-rate":  # set in Keras before the import.
    extra["new_learning_rate"] = 2.5 * lr
  return kind, options, extra


# One case per optimizer: its own arguments and the variants taken in turn
# (every variant runs on several optimizers; each optimizer's other `own`
# entries are checked against Keras in test_aliases.py). All 48 entries here
# took 3 min; 14 take under one.
_OWN = [(kind, n % max(len(CATALOG[kind].own), 1),
         CATALOG[kind].own[n % len(CATALOG[kind].own)]
         if CATALOG[kind].own else {})
        for n, kind in enumerate(KINDS)]
CASES = {
    f"{kind}-own{i}-{VARIANTS[n % len(VARIANTS)]}":
        _case(kind, own, VARIANTS[n % len(VARIANTS)])
    for n, (kind, i, own) in enumerate(_OWN)}


def _keras_run(kind, options, extra, params, grads, resume_at=RESUME_AT):
  """Keras's parameters after each step, and its variables at `resume_at`."""
  opt = KERAS_CLASSES[kind](**options)
  variables = [keras.Variable(np.asarray(p), name=n)
               for p, n in zip(jax.tree.leaves(params), leaf_names(params))]
  if "var_list" in extra or "var_names" in extra:
    opt.exclude_from_weight_decay(
        var_list=[variables[i] for i in extra.get("var_list", [])],
        var_names=extra.get("var_names"))
  opt.build(variables)
  step = jax.jit(lambda o, t, g: opt.stateless_apply(o, g, t))
  treedef = jax.tree.structure(params)
  train_vars = [v.value for v in variables]
  opt_vars = [v.value for v in opt.variables]
  out, saved = [], None
  for t, g in enumerate(grads):
    if t == resume_at:
      if "new_learning_rate" in extra:  # as `opt.learning_rate = ...` would.
        index = [v.name for v in opt.variables].index("learning_rate")
        opt_vars[index] = jnp.asarray(extra["new_learning_rate"],
                                      opt_vars[index].dtype)
      saved = (jax.tree.unflatten(treedef, train_vars), list(opt_vars))
    train_vars, opt_vars = step(opt_vars, train_vars, jax.tree.leaves(g))
    out.append(jax.tree.unflatten(treedef, [np.asarray(v) for v in
                                            train_vars]))
  return opt, out, saved


def _expected_decay(params, extra):
  """Which leaves Keras decays, by its own rule: a variable is excluded when
  it is in `var_list` or a `var_names` pattern is found in its name."""
  return [i not in extra.get("var_list", ()) and not any(
      re.search(pattern, name) for pattern in extra.get("var_names", ()))
          for i, name in enumerate(leaf_names(params))]


def _ours(opt, state, params, grads):
  @jax.jit
  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  out = []
  for g in grads:
    params, state = step(params, state, g)
    out.append(jax.tree.map(np.asarray, params))
  return out


def _assert_close(expected, got, ulps=ULPS, resume_at=RESUME_AT):
  assert_trajectories_match(expected, got, len(expected),
                            first_step=resume_at + 1, ulps=ulps)


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("case", sorted(CASES))
def test_training_resumed_in_jax_continues_the_keras_run(case):
  kind, options, extra = CASES[case]
  params = make_params(21)
  grads = varied_grads(params, TOTAL, seed=21)
  keras_opt, expected, (params_k, opt_vars_k) = _keras_run(
      kind, options, extra, params, grads)
  opt, state = ox.from_keras(keras_opt, params_k, opt_vars_k)
  # Counts: raw calls at the top, in the accumulator and the EMA; update
  # steps inside the accumulation.
  assert int(state.count) == int(state.inner.count) == RESUME_AT
  assert int(state.ema.count) == RESUME_AT
  assert int(state.inner.inner_state[1].count) == RESUME_AT // 3
  # The exclusions carried over decay exactly the leaves Keras decays.
  decays = ox.decay_mask(params_k, opt.config.get("weight_decay_mask"),
                         opt.config.get("exclude_from_weight_decay"))
  assert jax.tree.leaves(decays) == _expected_decay(params_k, extra)
  if "new_learning_rate" in extra:
    # The value Keras's float32 `learning_rate` variable holds.
    assert opt.config["learning_rate"] == float(
        np.float32(extra["new_learning_rate"]))
  got = _ours(opt, state, params_k, grads[RESUME_AT:])
  _assert_close(expected[RESUME_AT:], got)
  # Control: the same optimizer from a fresh state does not continue it.
  fresh = _ours(opt, opt.init(params_k), params_k, grads[RESUME_AT:])
  assert max_deviation(expected[RESUME_AT:], fresh) > FAR


def test_state_for_injected_hyperparameters_resumes_the_schedule():
  """The outer count of `inject_hyperparams` is set too: the schedule
  resumes at Keras's `_iterations`."""
  amsgrad = [own for own in CATALOG["adam"].own if own.get("amsgrad")][0]
  kind, options, extra = _case("adam", amsgrad, "schedule")
  params = make_params(22)
  grads = varied_grads(params, TOTAL, seed=22)
  keras_opt, expected, (params_k, opt_vars_k) = _keras_run(
      kind, options, extra, params, grads)
  config = ox.from_keras(keras_opt, params_k, opt_vars_k)[0].config
  injected = ox.inject_hyperparams(ox.adam)(**config)
  state = ox.state_from_keras(injected, keras_opt, params_k, opt_vars_k)
  assert int(state.count) == RESUME_AT
  assert int(state.hyperparams_states["learning_rate"].count) == RESUME_AT
  got = _ours(injected, state, params_k, grads[RESUME_AT:])
  _assert_close(expected[RESUME_AT:], got, ulps=ULPS_INJECTED)


def test_mismatched_optimizers_are_refused():
  params = make_params(23)
  keras_opt = keras.optimizers.Adam(use_ema=True)
  keras_opt.build([keras.Variable(np.asarray(p))
                   for p in jax.tree.leaves(params)])
  with pytest.raises(ValueError, match="ScaleByAdamState"):
    ox.state_from_keras(ox.rmsprop(use_ema=True), keras_opt, params)
  with pytest.raises(ValueError, match="use_ema"):
    ox.state_from_keras(ox.adam(), keras_opt, params)
  with pytest.raises(ValueError, match="nu_hat"):
    ox.state_from_keras(ox.adam(use_ema=True, amsgrad=True), keras_opt,
                        params)
  with pytest.raises(ValueError, match="accumulation"):
    ox.state_from_keras(ox.adam(use_ema=True, gradient_accumulation_steps=2),
                        keras_opt, params)
  with pytest.raises(ValueError, match="trainable leaves"):
    ox.state_from_keras(ox.adam(use_ema=True), keras_opt,
                        {"w": params["scale"]})
  sgd = keras.optimizers.SGD(momentum=0.9)
  sgd.build([keras.Variable(np.zeros(2))])
  with pytest.raises(ValueError, match="momentum"):
    ox.state_from_keras(ox.sgd(), sgd, np.zeros(2, np.float32))
  # Keras's SGD(momentum=0) has no velocity; ours keeps one for any momentum
  # but a plain 0 (so an injected momentum has one structure), imported as
  # zeros, as for RMSprop.
  plain_sgd = keras.optimizers.SGD()
  plain_sgd.build([keras.Variable(np.zeros(2))])
  imported = ox.state_from_keras(ox.sgd(momentum=0.5), plain_sgd,
                                 np.ones(2, np.float32))
  velocity = [n.momentum for n in jax.tree.leaves(
      imported, is_leaf=lambda x: isinstance(x, ox.ScaleBySgdState))
      if isinstance(n, ox.ScaleBySgdState)]
  assert len(velocity) == 1
  np.testing.assert_array_equal(velocity[0], np.zeros(2, np.float32))

  class MySGD(keras.optimizers.SGD):
    pass

  with pytest.raises(ValueError, match="MySGD"):
    custom = MySGD()
    custom.build([keras.Variable(np.zeros(2))])
    ox.from_keras(custom, np.zeros(2, np.float32))


def test_injected_rmsprop_without_momentum_imports_with_a_zero_slot():
  """An injected momentum keeps its slot even at 0 (one state structure);
  Keras's RMSprop(momentum=0) has none, so the slot is imported as zeros and
  the run continues Keras's."""
  params = make_params(22)
  grads = varied_grads(params, 6, seed=22)
  k_opt, expected, resume = _keras_run(
      "rmsprop", dict(learning_rate=0.05), {}, params, grads, resume_at=3)
  assert not [v for v in k_opt.variables if v.name.endswith("_momentum")]
  opt = ox.inject_hyperparams(ox.rmsprop)(0.05)
  state = ox.state_from_keras(opt, k_opt, resume[0], resume[1])
  momentum = state.inner_state.inner[1].momentum
  assert jax.tree.structure(momentum) == jax.tree.structure(resume[0])
  for slot, p in zip(jax.tree.leaves(momentum), jax.tree.leaves(resume[0])):
    assert slot.shape == p.shape and slot.dtype == jnp.float32
    np.testing.assert_array_equal(slot, np.zeros(p.shape, np.float32))
  _assert_close(expected[3:], _ours(opt, state, resume[0], grads[3:]),
                resume_at=3)
