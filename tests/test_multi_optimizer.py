"""multi_optimizer / OptimizerMap against Keras 3's MultiOptimizer.

Keras routes each variable by ``variable.path``; here a leaf's path is its
key path joined with "/". The Keras variables are built under
``keras.name_scope``s so that their paths are exactly those strings. Each
parity run is 28 steps of varied gradients on a tree with rank-0 to rank-3
leaves, compared with Keras's ``stateless_apply`` under jit (1e-6).
"""

import contextlib
import json
import os
import re

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import optax_suite as ox  # noqa: E402
from helpers import hostile_grads  # noqa: E402
from optax_suite import _trees  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import ours_trajectory  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

STEPS = 28
TOL = 1e-6
K = keras.optimizers


def tree(seed=0):
  rng = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  return {"encoder": {"dense": {"kernel": f(4, 6), "bias": f(6)},
                      "conv": {"kernel": f(3, 2, 4)}},
          "decoder": {"dense": {"kernel": f(6, 3)}},
          "head": {"kernel": f(3, 3)}, "scale": f()}


def paths(params):
  return [_trees.path_name(p) for p, _ in
          jax.tree_util.tree_flatten_with_path(params)[0]]


def keras_variables(params):
  out = []
  for path, leaf in zip(paths(params), jax.tree.leaves(params)):
    parts = path.split("/")
    with contextlib.ExitStack() as scopes:
      for part in parts[:-1]:
        scopes.enter_context(keras.name_scope(part))
      out.append(keras.Variable(np.asarray(leaf), name=parts[-1]))
  assert [v.path for v in out] == paths(params)
  return out


def keras_run(opt, params, grads, stop=None):
  variables = keras_variables(params)
  opt.build(variables)
  step = jax.jit(lambda o, t, g: opt.stateless_apply(o, g, t))
  opt_vars, train = ([v.value for v in opt.variables],
                     [v.value for v in variables])
  treedef = jax.tree.structure(params)
  out, saved = [], None
  for t, g in enumerate(grads):
    if t == stop:
      saved = (jax.tree.unflatten(treedef, train), list(opt_vars))
    train, opt_vars = step(opt_vars, train, jax.tree.leaves(g))
    out.append(jax.tree.unflatten(treedef, [np.asarray(v) for v in train]))
  return out, saved


def mixed(lib, loss_scale_factor=4.0):
  """The same multi-optimizer in Keras (lib=K) or here (lib=ox)."""
  names = (dict(adam="Adam", rmsprop="RMSprop", muon="Muon", adamax="Adamax")
           if lib is K else dict(adam="adam", rmsprop="rmsprop", muon="muon",
                                 adamax="adamax"))
  make = lambda n, *a, **k: getattr(lib, names[n])(*a, **k)
  optimizer_map = lib.OptimizerMap(
      make("adam", 0.01, global_clipnorm=1.0),
      {"encoder/.*": make("rmsprop", 0.01, momentum=0.5, use_ema=True,
                          ema_overwrite_frequency=5,
                          name="rmsprop"),  # Keras's own default: rm_sprop
       "head/kernel": make("muon", 0.02),
       # An exact key wins over the pattern "encoder/.*".
       "encoder/dense/kernel": make("adamax", 0.02, weight_decay=0.1,
                                    gradient_accumulation_steps=3)})
  cls = K.MultiOptimizer if lib is K else ox.multi_optimizer
  return cls(optimizer_map, loss_scale_factor=loss_scale_factor)


def test_parity_with_keras_multi_optimizer():
  """Exact key, pattern and default; each inner optimizer with its own
  clipping, EMA, accumulation and decay; Keras's loss_scale_factor set on
  all of them: Keras's parameters at every step."""
  params = tree(0)
  grads = varied_grads(params, STEPS, seed=1)
  expected, _ = keras_run(mixed(K), params, grads)
  actual, state = ours_trajectory(mixed(ox), params, grads)
  assert max_deviation(expected, actual) <= TOL
  assert int(state.count) == STEPS
  assert sorted(state.inner.inner_states) == ["0", "1", "2", "3"]
  # With the multi's loss_scale_factor ignored by the inner ones the run
  # would be different (the gradients are divided by 4 in both).
  unscaled, _ = ours_trajectory(mixed(ox, None), params, grads)
  assert max_deviation(expected, unscaled) > 1e-3


def test_callable_path_to_optimizer():
  """A callable path -> optimizer routes as Keras's callable does."""
  params = tree(1)
  grads = varied_grads(params, STEPS, seed=2)
  k_adam, k_rms = K.Adam(0.02), K.RMSprop(0.01)
  o_adam, o_rms = ox.adam(0.02), ox.rmsprop(0.01)
  expected, _ = keras_run(
      K.MultiOptimizer(lambda v: k_adam if "dense" in v.path else k_rms),
      params, grads)
  actual, state = ours_trajectory(
      ox.multi_optimizer(lambda path: o_adam if "dense" in path else o_rms),
      params, grads)
  assert max_deviation(expected, actual) <= TOL
  assert sorted(state.inner.inner_states) == ["0", "1"]


def test_lookup_rules_and_multiple_matches():
  """Exact key first, then re.fullmatch; two matching patterns raise (as
  Keras raises), at init since that is when paths are seen."""
  m = ox.OptimizerMap(ox.adam(), {"enc.*": ox.adamax(), ".*kernel": ox.rmsprop(),
                                  "enc/kernel": ox.adadelta()})
  assert m["enc/kernel"].factory is ox.adadelta
  assert m["enc/bias"].factory is ox.adamax
  assert m["dec/kernel"].factory is ox.rmsprop
  assert m["dec"].factory is ox.adam
  assert m["xenc/bias"].factory is ox.adam  # fullmatch, not search
  with pytest.raises(ValueError, match="Multiple optimizers"):
    m["enc/w/kernel"]
  opt = ox.multi_optimizer(m)
  with pytest.raises(ValueError, match="Multiple optimizers"):
    opt.init({"enc": {"w": {"kernel": jnp.ones(2)}}})
  # Keras's own map agrees on the same keys.
  km = K.OptimizerMap(K.Adam(), {"enc.*": K.Adamax(), ".*kernel": K.RMSprop(),
                                 "enc/kernel": K.Adadelta()})
  assert type(km["enc/bias"]).__name__ == "Adamax"
  with pytest.raises(ValueError, match="Multiple optimizers"):
    km["enc/w/kernel"]


def test_integer_leaves_are_left_alone():
  params = {"w": jnp.ones(2), "step": jnp.zeros([], jnp.int32)}
  opt = ox.multi_optimizer(ox.OptimizerMap(ox.adam(0.1)))
  updates, _ = opt.update({"w": jnp.ones(2), "step": jnp.zeros([], jnp.int32)},
                          opt.init(params), params)
  assert updates["step"].dtype == jnp.int32 and int(updates["step"]) == 0


def test_config_is_keras_config_both_ways():
  """get_config writes keras.optimizers.serialize's dict; from_config reads
  Keras's and trains as Keras."""
  ours, theirs = mixed(ox), mixed(K)
  d = ox.get_config(ours)
  k_dict = keras.optimizers.serialize(theirs)
  # Keras writes its learning rates as float32 and numbers the names of
  # optimizers made in one session ("adam_3"): compare the structure and
  # every other value exactly, the learning rates to float32, the names
  # without Keras's counter.
  def normalize(x):
    if isinstance(x, dict):
      return {k: (float(np.float32(v)) if k == "learning_rate" else
                  re.sub(r"_\d+$", "", v) if k == "name" else
                  normalize(v)) for k, v in x.items()}
    return x
  assert normalize(d) == normalize(k_dict)
  rebuilt = ox.from_config(json.loads(json.dumps(k_dict)))
  assert ox.get_config(rebuilt) == k_dict
  params = tree(2)
  grads = varied_grads(params, STEPS, seed=3)
  expected, _ = keras_run(mixed(K), params, grads)
  actual, _ = ours_trajectory(rebuilt, params, grads)
  assert max_deviation(expected, actual) <= TOL
  again = ox.from_config(json.loads(json.dumps(d)))
  assert ox.get_config(again) == d
  with pytest.raises(ValueError, match="callable"):
    ox.get_config(ox.multi_optimizer(lambda path: ox.adam()))


def test_scale_loss_reads_the_shared_factor():
  params = tree(3)
  assert float(ox.scale_loss(2.0, mixed(ox, 8.0).init(params))) == 16.0
  assert float(ox.scale_loss(2.0, mixed(ox, None).init(params))) == 2.0


def test_finalize_variable_values_through_multi_optimizer():
  """The EMA of the leaves whose optimizer keeps one, the parameters
  elsewhere (Keras's finalize_variable_values on each inner optimizer)."""
  params = tree(4)
  grads = varied_grads(params, 6, seed=4)
  k_multi = K.MultiOptimizer(K.OptimizerMap(
      K.Adam(0.01), {"encoder/.*": K.RMSprop(0.01, use_ema=True)}))
  o_multi = ox.multi_optimizer(ox.OptimizerMap(
      ox.adam(0.01), {"encoder/.*": ox.rmsprop(0.01, use_ema=True)}))
  variables = keras_variables(params)
  k_multi.build(variables)
  for g in grads:
    k_multi.apply(jax.tree.leaves(g), variables)
  k_multi.finalize_variable_values(variables)
  final, state = ours_trajectory(o_multi, params, grads)
  got = ox.finalize_variable_values(jax.tree.map(jnp.asarray, final[-1]),
                                    state)
  for v, x in zip(variables, jax.tree.leaves(got)):
    np.testing.assert_allclose(x, np.asarray(v.value), atol=TOL)


@pytest.mark.parametrize("make,message", [
    (lambda: ox.OptimizerMap("adam"), "default_optimizer"),
    (lambda: ox.OptimizerMap(ox.adam(), [ox.adam()]), "optimizer_map"),
    (lambda: ox.OptimizerMap(ox.adam(), {"a": 3}), "'a'"),
    (lambda: ox.OptimizerMap(ox.adam(), {1: ox.adam()}), "key=1"),
    (lambda: ox.OptimizerMap(ox.adam(), {"a": ox.loss_scale_optimizer(
        ox.adam())}), "loss_scale_optimizer"),
    (lambda: ox.OptimizerMap(ox.adam(), {"a": ox.multi_optimizer(
        ox.OptimizerMap(ox.adam()))}), "multi_optimizer"),
    (lambda: ox.multi_optimizer("adam"), "optimizer_map"),
    (lambda: ox.multi_optimizer(ox.OptimizerMap(ox.adam()),
                                loss_scale_factor=-1.0), "loss_scale_factor"),
])
def test_bad_input_refused(make, message):
  with pytest.raises(ValueError, match=message):
    make()


def test_duplicate_key_refused():
  m = ox.OptimizerMap(ox.adam())
  m["a"] = ox.adam()
  with pytest.raises(ValueError, match="already exists"):
    m["a"] = ox.rmsprop()


def test_from_keras_resumes_a_keras_multi_optimizer_run():
  """13 Keras steps (mid-accumulation in the Adamax part, EMA in the
  RMSprop part), imported with from_keras, then 15 steps here: Keras's 28.
  A fresh state instead is far off."""
  params = tree(5)
  grads = varied_grads(params, STEPS, seed=5)
  k_multi = mixed(K)
  expected, (params_13, opt_vars_13) = keras_run(k_multi, params, grads,
                                                 stop=13)
  opt, state = ox.from_keras(k_multi, params_13, opt_vars_13)
  assert opt.factory is ox.multi_optimizer and int(state.count) == 13
  resumed, _ = _continue(opt, state, params_13, grads[13:])
  assert max_deviation(expected[13:], resumed) <= TOL
  fresh, _ = _continue(opt, opt.init(params_13), params_13, grads[13:])
  assert max_deviation(expected[13:], fresh) > 1e-4
  # Our own routing differing from Keras's is refused.
  other = ox.multi_optimizer(ox.OptimizerMap(ox.adam(), {"head/.*":
                                                         ox.adam()}))
  with pytest.raises(ValueError, match="routes"):
    ox.state_from_keras(other, k_multi, params_13, opt_vars_13)


def _continue(opt, state, params, grads):
  step = jax.jit(lambda p, s, g: (lambda u_s: (
      jax.tree.map(lambda a, b: a + b, p, u_s[0]), u_s[1]))(
          opt.update(g, s, p)))
  out = []
  for g in grads:
    params, state = step(params, state, g)
    out.append(jax.tree.map(np.asarray, params))
  return out, state


def test_loss_scale_optimizer_around_it_matches_keras():
  """Keras's LossScaleOptimizer around the MultiOptimizer, with inf/NaN
  steps (skipped, scale halved) and growth every 3 finite steps."""
  params = tree(7)
  grads = hostile_grads(params, STEPS, bad_steps=(5, 6, 13, 20), seed=7)
  expected, _ = keras_run(K.LossScaleOptimizer(
      mixed(K, None), initial_scale=2.0**8, dynamic_growth_steps=3),
      params, grads)
  actual, state = ours_trajectory(ox.loss_scale_optimizer(
      mixed(ox, None), initial_scale=2.0**8, dynamic_growth_steps=3),
      params, grads)
  assert max_deviation(expected, actual) <= TOL
  assert float(state.scale) != 2.0**8
