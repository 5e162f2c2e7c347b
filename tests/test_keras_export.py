"""Handing a run back to Keras: ``state_to_keras``, the inverse of the import.

Each round trip runs an optax_suite optimizer for ``K`` steps (a micro-step
in the middle of an accumulation where there is one), writes its state with
``ox.state_to_keras`` into the same Keras optimizer built on the parameters
at step ``K``, runs ``M`` more steps in Keras (``stateless_apply`` under
``jax.jit``) from the exported variables, and compares Keras's parameters
with optax_suite's own steps ``K + 1 .. K + M``
(``keras_oracle.assert_trajectories_match``, the parity tolerance). A control
runs Keras's same steps from its freshly built variables instead and is far
off: the export is what makes the runs agree. Cases: every optimizer of
``tests/catalog.py`` with its last own arguments away from the defaults and
base options in turn (EMA with overwrite, accumulation, clipnorm, global
clipnorm, clipvalue, weight decay), ``loss_scale_optimizer`` with
non-finite steps on both sides of the export, ``multi_optimizer``, both
together, and an optimizer inside ``inject_hyperparams``. Mismatched
variables are refused with the mismatch named, and nothing is written.
"""

import contextlib
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import optax_suite as ox  # noqa: E402
from optax_suite import _trees  # noqa: E402
from catalog import CATALOG  # noqa: E402
from catalog import KINDS  # noqa: E402
from helpers import hostile_grads  # noqa: E402
from keras_oracle import FAR  # noqa: E402
from keras_oracle import KERAS_CLASSES  # noqa: E402
from keras_oracle import ULPS  # noqa: E402
from keras_oracle import ULPS_INJECTED  # noqa: E402
from keras_oracle import assert_trajectories_match  # noqa: E402
from keras_oracle import build_keras  # noqa: E402
from keras_oracle import make_params  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

K, M = 13, 26  # 13: 4 updates of 3 calls + 1 (6 of 2 + 1) micro-step.

# Base options, in turn over the catalog: every optimizer gets one set.
BASES = (
    dict(gradient_accumulation_steps=3, use_ema=True, ema_momentum=0.8,
         ema_overwrite_frequency=4),
    dict(clipnorm=1.0, use_ema=True, ema_momentum=0.9),
    dict(global_clipnorm=1.0, gradient_accumulation_steps=2),
    dict(clipvalue=0.5, weight_decay=0.01),
)
# The first cases (one per base set) run in the fast tier.
FAST = 4


def _options(kind, index):
  entry = CATALOG[kind]
  own = dict(entry.own[-1]) if entry.own else {}
  own.setdefault("learning_rate", entry.parity_learning_rate or 0.01)
  return {**own, **BASES[index % len(BASES)]}


CASES = [pytest.param(kind, _options(kind, i), id=kind,
                      marks=() if i < FAST else pytest.mark.slow)
         for i, kind in enumerate(KINDS)]


def _ours(opt, params, grads, stop):
  """Our parameters after each step, and (params, state) after `stop`."""
  @jax.jit
  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state, out, saved = opt.init(params), [], None
  for t, g in enumerate(grads):
    params, state = step(params, state, g)
    out.append(jax.tree.map(np.asarray, params))
    if t + 1 == stop:
      saved = (params, state)
  return out, saved


def _keras_steps(step, train, opt_vars, grads, treedef):
  """Keras's parameters after each `stateless_apply`, and its variables."""
  out = []
  for g in grads:
    train, opt_vars = step(opt_vars, train, jax.tree.leaves(g))
    out.append(jax.tree.unflatten(treedef, [np.asarray(v) for v in train]))
  return out, opt_vars


def _round_trip(opt, make_keras, params, grads, build=build_keras,
                check_variables=True):
  """K steps here, export, M in Keras: (ours, Keras's, control, opt_vars).

  Also checks that the exported variables are the ones Keras itself holds
  after the same K steps from `params` (to the parity tolerance, each
  variable a leaf): the layout, the step counts and the slots Keras does
  not read back (Adafactor's rebuilt velocity) are Keras's own.
  `make_keras()` gives a new Keras optimizer (built twice: on `params`
  for that reference, on the parameters at step K for the export).
  `check_variables=False` skips that reference (injected hyperparameters:
  our slots are not Keras's to the parity tolerance before any export).
  """
  ours, (params_k, state_k) = _ours(opt, params, grads, K)
  reference, _ = build(make_keras(), params)
  ref_step = jax.jit(lambda o, t, g: reference.stateless_apply(o, g, t))
  k_opt, variables = build(make_keras(), params_k)
  fresh = [v.value for v in k_opt.variables]
  returned = ox.state_to_keras(opt, state_k, k_opt, params_k)
  opt_vars = [v.value for v in k_opt.variables]
  # What it returns is what the Keras variables now hold.
  assert len(returned) == len(opt_vars)
  for a, b in zip(returned, opt_vars):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  step = jax.jit(lambda o, t, g: k_opt.stateless_apply(o, g, t))
  treedef = jax.tree.structure(params)
  if check_variables:
    _, keras_own = _keras_steps(
        ref_step, jax.tree.leaves(params),
        [v.value for v in reference.variables], grads[:K], treedef)
    assert_trajectories_match([[np.asarray(v) for v in keras_own]],
                              [[np.asarray(v) for v in opt_vars]],
                              first_step=K, ulps=ULPS)
  train = [v.value for v in variables]
  theirs, final_vars = _keras_steps(step, train, opt_vars, grads[K:],
                                    treedef)
  control, _ = _keras_steps(step, train, fresh, grads[K:], treedef)
  return ours[K:], theirs, control, (k_opt, final_vars)


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("kind,options", CASES)
def test_keras_continues_the_exported_run(kind, options):
  """K steps of ours, exported, then M steps of Keras's `stateless_apply`:
  ours for K + M steps, to the parity tolerance. From Keras's fresh
  variables instead, the same M steps are far off."""
  params = make_params(31)
  grads = varied_grads(params, K + M, seed=31)
  opt = getattr(ox, kind)(**options)
  ours, theirs, control, (k_opt, final_vars) = _round_trip(
      opt, lambda: KERAS_CLASSES[kind](**options), params, grads)
  assert_trajectories_match(theirs, ours, M, first_step=K + 1, ulps=ULPS)
  assert max_deviation(theirs, control) > FAR
  iteration = [v is k_opt._iterations for v in k_opt.variables].index(True)
  assert int(final_vars[iteration]) == K + M


def test_injected_hyperparameters_are_exported():
  """An optimizer inside `inject_hyperparams` (its state wraps ours): the
  state inside is found and exported, and Keras continues the run, to the
  tolerance for injected hyperparameters. (The variables are not compared
  with Keras's own after K steps: an injected beta_2 is a float32 array, so
  our `1 - beta_2` is rounded from it, and after 13 steps the velocity is
  about 200 ulps from Keras's, and from the same optimizer not injected,
  before any export.)"""
  params = make_params(39)
  grads = varied_grads(params, K + M, seed=39)
  options = dict(learning_rate=0.01, amsgrad=True, use_ema=True,
                 gradient_accumulation_steps=3)
  opt = ox.inject_hyperparams(ox.adam)(**options)
  ours, theirs, control, _ = _round_trip(
      opt, lambda: keras.optimizers.Adam(**options), params, grads,
      check_variables=False)
  assert_trajectories_match(theirs, ours, M, first_step=K + 1,
                            ulps=ULPS_INJECTED)
  assert max_deviation(theirs, control) > FAR


def test_schedule_resumes_at_the_exported_iteration():
  """A cosine schedule with warmup and accumulation: Keras evaluates it at
  the exported step count, so the warmup and decay continue where ours
  were; the run matches to the parity tolerance."""
  params = make_params(41)
  grads = varied_grads(params, K + M, seed=41)
  schedule = dict(initial_learning_rate=0.01, decay_steps=10,
                  warmup_target=0.05, warmup_steps=4)
  base = dict(gradient_accumulation_steps=2, use_ema=True)
  opt = ox.adam(ox.schedules.cosine_decay(**schedule), **base)
  ours, theirs, control, _ = _round_trip(
      opt, lambda: keras.optimizers.Adam(
          keras.optimizers.schedules.CosineDecay(**schedule), **base),
      params, grads)
  assert_trajectories_match(theirs, ours, M, first_step=K + 1, ulps=ULPS)
  assert max_deviation(theirs, control) > FAR


def test_nadam_u_product_is_exported():
  """Nadam's `u_product` (the product of its momentum schedule) goes to
  Keras's scalar: after the export it is our state's, not Keras's 1.0."""
  params = make_params(32)
  grads = varied_grads(params, K, seed=32)
  opt = ox.nadam(0.02, beta_1=0.8)
  _, (params_k, state_k) = _ours(opt, params, grads, K)
  k_opt, _ = build_keras(keras.optimizers.Nadam(0.02, beta_1=0.8), params_k)
  ox.state_to_keras(opt, state_k, k_opt, params_k)
  ours = [n.u_product for n in jax.tree.leaves(
      state_k, is_leaf=lambda x: isinstance(x, ox.ScaleByNadamState))
      if isinstance(n, ox.ScaleByNadamState)]
  assert len(ours) == 1 and float(ours[0]) != 1.0
  assert float(k_opt._u_product.value) == float(ours[0])


def test_loss_scale_optimizer_round_trip():
  """loss_scale_optimizer around Adam with accumulation and EMA, inf/NaN
  steps before and after the export: Keras's LossScaleOptimizer continues
  with our dynamic scale and step counter, to the parity tolerance, and ends
  with our scale."""
  kwargs, growth, initial = CATALOG["adam"].loss_scale_run
  params = make_params(33)
  grads = hostile_grads(params, K + M, bad_steps=(3, 4, 5, 11, 17, 18, 30),
                        seed=33)
  opt = ox.loss_scale_optimizer(ox.adam(**kwargs), initial_scale=initial,
                                dynamic_growth_steps=growth)
  ours, theirs, control, (k_opt, final_vars) = _round_trip(
      opt, lambda: keras.optimizers.LossScaleOptimizer(
          keras.optimizers.Adam(**kwargs), initial_scale=initial,
          dynamic_growth_steps=growth), params, grads)
  assert_trajectories_match(theirs, ours, M, first_step=K + 1, ulps=ULPS)
  assert max_deviation(theirs, control) > FAR
  # At the export neither the scale nor the counter is Keras's initial one.
  _, (_, state_k) = _ours(opt, params, grads, K)
  assert int(state_k.step_counter) == 1 and float(state_k.scale) != initial
  _, (_, state) = _ours(opt, params, grads, K + M)
  scale = [v is k_opt.dynamic_scale for v in k_opt.variables].index(True)
  assert float(final_vars[scale]) == float(state.scale) != initial


def _paths(params):
  return [_trees.path_name(p) for p, _ in
          jax.tree_util.tree_flatten_with_path(params)[0]]


def _build_scoped(k_opt, params):
  """Keras variables whose paths are the leaves' paths joined with '/'."""
  variables = []
  for path, leaf in zip(_paths(params), jax.tree.leaves(params)):
    parts = path.split("/")
    with contextlib.ExitStack() as scopes:
      for part in parts[:-1]:
        scopes.enter_context(keras.name_scope(part))
      variables.append(keras.Variable(np.asarray(leaf), name=parts[-1]))
  assert [v.path for v in variables] == _paths(params)
  k_opt.build(variables)
  return k_opt, variables


def _mixed(lib):
  """The same multi-optimizer in Keras (keras.optimizers) or here (ox)."""
  names = (dict(adam="Adam", rmsprop="RMSprop", adamax="Adamax", lion="Lion")
           if lib is keras.optimizers else dict(
               adam="adam", rmsprop="rmsprop", adamax="adamax", lion="lion"))
  make = lambda n, *a, **k: getattr(lib, names[n])(*a, **k)
  optimizer_map = lib.OptimizerMap(
      make("adam", 0.01, clipnorm=1.0),
      {"encoder/.*": make("rmsprop", 0.01, momentum=0.5, use_ema=True,
                          ema_overwrite_frequency=5, name="rmsprop"),
       "head/kernel": make("lion", 0.005),
       "encoder/dense/kernel": make("adamax", 0.02, weight_decay=0.1,
                                    gradient_accumulation_steps=3)})
  cls = (keras.optimizers.MultiOptimizer if lib is keras.optimizers
         else ox.multi_optimizer)
  return cls(optimizer_map)


def _tree(seed):
  rng = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  return {"encoder": {"dense": {"kernel": f(4, 6), "bias": f(6)},
                      "conv": {"kernel": f(3, 2, 4)}},
          "decoder": {"dense": {"kernel": f(6, 3)}},
          "head": {"kernel": f(3, 3)}, "scale": f()}


def test_multi_optimizer_round_trip():
  """multi_optimizer (exact key, pattern, default; EMA, accumulation, decay,
  clipping inside): Keras's MultiOptimizer continues the exported run, each
  of its inner optimizers from the state of ours on the same leaves."""
  params = _tree(34)
  grads = varied_grads(params, K + M, seed=34)
  ours, theirs, control, (k_opt, final_vars) = _round_trip(
      _mixed(ox), lambda: _mixed(keras.optimizers), params, grads,
      build=_build_scoped)
  assert_trajectories_match(theirs, ours, M, first_step=K + 1, ulps=ULPS)
  assert max_deviation(theirs, control) > FAR
  assert int(final_vars[0]) == K + M  # The MultiOptimizer's own iteration.


def _exported_adam(**options):
  """(params, state) after K steps of ox.adam(0.01, **options)."""
  params = make_params(35)
  opt = ox.adam(0.01, **options)
  _, (params_k, state_k) = _ours(opt, params, varied_grads(params, K, 35), K)
  return opt, params_k, state_k


def _snapshot(k_opt):
  return [np.array(v.value) for v in k_opt.variables]


def _assert_unchanged(before, k_opt):
  after = _snapshot(k_opt)
  assert len(before) == len(after)
  for a, b in zip(before, after):
    np.testing.assert_array_equal(a, b)


def _drop_first(params):
  leaves, treedef = jax.tree.flatten(params)
  del treedef
  return leaves[1:]


def _transposed(params):
  return jax.tree.map(lambda p: p.T if p.ndim == 2 else p, params)


MISMATCHES = {
    # name: (Keras optimizer, optax_suite options, params -> params, message)
    "count": (lambda: keras.optimizers.Adam(0.01), {}, _drop_first,
              "4 trainable leaves where the Keras optimizer was built for 5"),
    "shape": (lambda: keras.optimizers.Adam(0.01), {}, _transposed,
              r"'dense/kernel' of `params` has shape \(3, 4\)"),
    "class": (lambda: keras.optimizers.RMSprop(0.01), {}, None,
              "`opt` is adam where the Keras optimizer is RMSprop"),
    "accumulation-steps": (
        lambda: keras.optimizers.Adam(0.01, gradient_accumulation_steps=3),
        dict(gradient_accumulation_steps=2), None,
        "gradient_accumulation_steps=2 where the Keras optimizer has "
        "gradient_accumulation_steps=3"),
    "accumulation-off": (
        lambda: keras.optimizers.Adam(0.01),
        dict(gradient_accumulation_steps=2), None,
        "gradient_accumulation_steps=2 where the Keras optimizer has "
        "gradient_accumulation_steps=None"),
    "ema": (lambda: keras.optimizers.Adam(0.01, use_ema=True), {}, None,
            "use_ema=False where the Keras optimizer has use_ema=True"),
    "amsgrad": (lambda: keras.optimizers.Adam(0.01, amsgrad=True), {}, None,
                "`nu_hat` slots that the optax_suite state does not keep"),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_mismatched_variables_are_refused_and_nothing_is_written(case):
  """Each mismatch raises a ValueError naming it, and the Keras optimizer's
  variables (after a Keras step) are as they were. Control: the same
  state into the matching optimizer does change them."""
  make_keras, options, change, message = MISMATCHES[case]
  opt, params_k, state_k = _exported_adam(**options)
  k_opt, variables = build_keras(make_keras(), params_k)
  for g in varied_grads(params_k, 1, seed=36):
    k_opt.apply(jax.tree.leaves(g), variables)
  before = _snapshot(k_opt)
  given = change(params_k) if change else params_k
  with pytest.raises(ValueError, match=message):
    ox.state_to_keras(opt, state_k, k_opt, given)
  _assert_unchanged(before, k_opt)
  matching = ox.adam(0.01, **options)
  good, good_variables = build_keras(keras.optimizers.Adam(0.01, **options),
                                     params_k)
  for g in varied_grads(params_k, 1, seed=36):
    good.apply(jax.tree.leaves(g), good_variables)
  good_before = _snapshot(good)
  ox.state_to_keras(matching, state_k, good, params_k)
  assert max_deviation([good_before], [_snapshot(good)]) > FAR


def test_unbuilt_and_unsupported_keras_optimizers_are_refused():
  """An unbuilt Keras optimizer, a subclass this package does not know, and
  a loss-scale or multi optimizer paired with a plain one are refused."""
  opt, params_k, state_k = _exported_adam()
  with pytest.raises(ValueError, match="not built"):
    ox.state_to_keras(opt, state_k, keras.optimizers.Adam(0.01), params_k)

  class MyAdam(keras.optimizers.Adam):
    pass

  custom, _ = build_keras(MyAdam(0.01), params_k)
  with pytest.raises(ValueError, match="MyAdam"):
    ox.state_to_keras(opt, state_k, custom, params_k)
  lso, _ = build_keras(keras.optimizers.LossScaleOptimizer(
      keras.optimizers.Adam(0.01)), params_k)
  before = _snapshot(lso)
  with pytest.raises(ValueError, match="loss_scale_optimizer"):
    ox.state_to_keras(opt, state_k, lso, params_k)
  _assert_unchanged(before, lso)


def test_loss_scale_growth_steps_mismatch_writes_nothing():
  """A different dynamic_growth_steps is named; the inner optimizer's
  variables, which would have matched, are not written either."""
  params = make_params(37)
  opt = ox.loss_scale_optimizer(ox.adam(0.01), dynamic_growth_steps=3)
  _, (params_k, state_k) = _ours(opt, params, varied_grads(params, K, 37), K)
  k_opt, _ = build_keras(keras.optimizers.LossScaleOptimizer(
      keras.optimizers.Adam(0.01), dynamic_growth_steps=4), params_k)
  before = _snapshot(k_opt)
  with pytest.raises(ValueError, match="dynamic_growth_steps=3 where"):
    ox.state_to_keras(opt, state_k, k_opt, params_k)
  _assert_unchanged(before, k_opt)


def test_multi_optimizer_routing_mismatch_writes_nothing():
  """Our routing of the leaves differing from Keras's is refused, and no
  inner optimizer's variables are written."""
  params = _tree(38)
  other = ox.multi_optimizer(ox.OptimizerMap(ox.adam(0.01), {
      "head/.*": ox.adam(0.01)}))
  _, (params_k, state_k) = _ours(other, params, varied_grads(params, K, 38),
                                 K)
  k_opt, _ = _build_scoped(_mixed(keras.optimizers), params_k)
  before = _snapshot(k_opt)
  with pytest.raises(ValueError, match="routes"):
    ox.state_to_keras(other, state_k, k_opt, params_k)
  _assert_unchanged(before, k_opt)


def test_loss_scale_around_multi_optimizer_round_trip():
  """Keras's LossScaleOptimizer around its MultiOptimizer (inf/NaN steps on
  both sides of the export): our loss_scale_optimizer around
  multi_optimizer exports into both layers, and Keras continues the run."""
  params = _tree(40)
  grads = hostile_grads(params, K + M, bad_steps=(3, 4, 5, 11, 17, 18, 30),
                        seed=40)
  ours, theirs, control, _ = _round_trip(
      ox.loss_scale_optimizer(_mixed(ox), initial_scale=2.0**4,
                              dynamic_growth_steps=3),
      lambda: keras.optimizers.LossScaleOptimizer(
          _mixed(keras.optimizers), initial_scale=2.0**4,
          dynamic_growth_steps=3), params, grads, build=_build_scoped)
  assert_trajectories_match(theirs, ours, M, first_step=K + 1, ulps=ULPS)
  assert max_deviation(theirs, control) > FAR
