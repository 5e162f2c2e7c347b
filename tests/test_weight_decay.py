"""Decoupled weight decay: Keras's formula and the ways to exclude leaves.

Exclusion patterns are proved against Keras 3 itself: a Keras-like tree
(``encoder/dense/{kernel,bias}``, ``encoder/norm/{gamma,beta}``,
``head/{kernel,bias}``) is given to Keras as variables named by their last
key, as Keras names them, and one jitted 28-step Adam run per pattern must
follow Keras's (``atol = rtol = 1e-6``), and differ from the run that
decays everything, so the exclusion is what is being checked.
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
from keras_oracle import build_keras  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import ours_trajectory  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

STEPS = 28
ATOL = RTOL = 1e-6

PARAMS = {"dense": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full(2, 2.0)},
          "embedding": jnp.full(3, 2.0), "steps": jnp.asarray(5)}


def test_decay_is_w_times_wd_times_lr_at_this_call():
  schedule = lambda step: 0.1 * (step + 1)
  tx = optax.chain(ox.add_decoupled_weight_decay(0.5, schedule),
                   optax.scale(-1.0))
  state = tx.init(PARAMS)
  zeros = jax.tree.map(jnp.zeros_like, PARAMS)
  for step in range(3):
    u, state = tx.update(zeros, state, PARAMS)
    np.testing.assert_allclose(u["embedding"], -2.0 * 0.5 * 0.1 * (step + 1),
                               rtol=1e-6)
    assert int(u["steps"]) == 0


def test_exclusions_by_name_by_mask_and_by_callable():
  by_name = ox.decay_mask(PARAMS, exclude_from_weight_decay=["bias", "emb"])
  assert by_name == {"dense": {"kernel": True, "bias": False},
                     "embedding": False, "steps": False}
  mask = {"dense": {"kernel": False, "bias": True}, "embedding": True,
          "steps": True}
  assert ox.decay_mask(PARAMS, mask)["dense"] == {"kernel": False,
                                                  "bias": True}
  assert ox.decay_mask(PARAMS, lambda p: mask) == ox.decay_mask(PARAMS, mask)
  assert ox.decay_mask(PARAMS, mask, ["bias"])["dense"]["bias"] is False


def test_excluded_leaves_do_not_decay_in_the_optimizer():
  opt = ox.adamax(learning_rate=0.1, weight_decay=0.5,
                  exclude_from_weight_decay=["bias"])
  zeros = jax.tree.map(jnp.zeros_like, PARAMS)
  u, _ = opt.update(zeros, opt.init(PARAMS), PARAMS)
  np.testing.assert_array_equal(u["dense"]["bias"], 0.0)
  np.testing.assert_allclose(u["dense"]["kernel"], -2.0 * 0.5 * 0.1, rtol=1e-6)


def test_array_mask_is_applied_inside_jit():
  mask = jax.tree.map(lambda p: jnp.asarray(p.ndim == 2), PARAMS)
  opt = ox.adam(learning_rate=0.1, weight_decay=0.5, weight_decay_mask=mask)
  zeros = jax.tree.map(jnp.zeros_like, PARAMS)
  u, _ = jax.jit(opt.update)(zeros, opt.init(PARAMS), PARAMS)
  np.testing.assert_array_equal(u["embedding"], 0.0)
  assert float(u["dense"]["kernel"][0, 0]) < 0


def test_needs_params():
  tx = ox.add_decoupled_weight_decay(0.1)
  with pytest.raises(ValueError, match="params"):
    tx.update({"w": jnp.ones(1)}, tx.init({"w": jnp.ones(1)}))


def _keras_named_params(seed=5):
  rng = np.random.default_rng(seed)
  leaf = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return {"encoder": {"dense": {"kernel": leaf(4, 3), "bias": leaf(3)},
                      "norm": {"gamma": leaf(3), "beta": leaf(3)}},
          "head": {"kernel": leaf(3, 2), "bias": leaf(2)}}


KERAS_KW = dict(learning_rate=0.05, weight_decay=0.2)


@pytest.mark.parametrize("patterns,excluded", [
    (["^bias$"], {"bias"}),
    (["bias$"], {"bias"}),
    (["kernel|gamma"], {"kernel", "gamma"}),
])
def test_anchored_name_patterns_exclude_as_keras_does(patterns, excluded):
  """Each pattern is searched in the leaf's own name, as Keras searches
  `variable.name`: anchored patterns exclude every leaf of that name."""
  params = _keras_named_params()
  mask = ox.decay_mask(params, exclude_from_weight_decay=patterns)
  for path, flag in jax.tree_util.tree_flatten_with_path(mask)[0]:
    assert flag == (path[-1].key not in excluded), path
  grads = varied_grads(params, STEPS, seed=5)
  expected = _keras_run(params, grads, var_names=patterns)
  got, _ = ours_trajectory(
      ox.adam(**KERAS_KW, exclude_from_weight_decay=patterns), params, grads)
  _assert_match(expected, got)
  everything, _ = ours_trajectory(ox.adam(**KERAS_KW), params, grads)
  assert max_deviation(expected, everything) > 100 * ATOL


def _keras_run(params, grads, var_names=None, var_list=()):
  """Keras Adam on variables named by their leaves' last keys, excluding
  `var_names` patterns and the variables at the `var_list` indices."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  variables = [keras.Variable(np.asarray(p), name=path[-1].key)
               for path, p in leaves]
  opt = keras.optimizers.Adam(**KERAS_KW)
  opt.exclude_from_weight_decay(var_list=[variables[i] for i in var_list],
                                var_names=var_names)
  return _stateless_run(opt, variables, params, grads)


def _stateless_run(opt, variables, params, grads):
  opt.build(variables)
  step = jax.jit(lambda o, t, g: opt.stateless_apply(o, g, t))
  train_vars = [v.value for v in variables]
  opt_vars = [v.value for v in opt.variables]
  out = []
  for g in grads:
    train_vars, opt_vars = step(opt_vars, train_vars, jax.tree.leaves(g))
    out.append(jax.tree.unflatten(jax.tree.structure(params),
                                  [np.asarray(v) for v in train_vars]))
  return out


def _assert_match(expected, got):
  assert len(expected) == len(got) == STEPS
  for t, (e, g) in enumerate(zip(expected, got)):
    for x, y in zip(jax.tree.leaves(e), jax.tree.leaves(g)):
      np.testing.assert_allclose(y, x, atol=ATOL, rtol=RTOL,
                                 err_msg=f"step {t + 1}")


def test_path_patterns_exclude_a_sub_module_as_keras_var_list_does():
  """`"path:"` patterns are searched in the "/"-joined path: excluding
  `encoder/` gives Keras's run with the encoder's variables excluded."""
  params = _keras_named_params()
  patterns = ["path:^encoder/", "^bias$"]
  assert ox.decay_mask(params, exclude_from_weight_decay=patterns) == {
      "encoder": {"dense": {"kernel": False, "bias": False},
                  "norm": {"gamma": False, "beta": False}},
      "head": {"kernel": True, "bias": False}}
  grads = varied_grads(params, STEPS, seed=6)
  # Leaves in tree order: the encoder's four come first.
  expected = _keras_run(params, grads, ["^bias$"], var_list=range(4))
  got, _ = ours_trajectory(
      ox.adam(**KERAS_KW, exclude_from_weight_decay=patterns), params, grads)
  _assert_match(expected, got)
  by_name_only, _ = ours_trajectory(
      ox.adam(**KERAS_KW, exclude_from_weight_decay=["^bias$"]), params,
      grads)
  assert max_deviation(expected, by_name_only) > 100 * ATOL
  # By name alone "encoder" matches no leaf: nothing is excluded.
  assert all(jax.tree.leaves(ox.decay_mask(
      params, exclude_from_weight_decay=["encoder"])))


def test_sequence_indices_and_attributes_are_names_too():
  params = {"layers": [jnp.ones(2), jnp.ones(2)], "bias": jnp.ones(1)}
  assert ox.decay_mask(params, exclude_from_weight_decay=["^1$"]) == {
      "layers": [True, False], "bias": True}
  assert ox.decay_mask(params, exclude_from_weight_decay=[
      "path:layers/0"]) == {"layers": [False, True], "bias": True}


def test_configs_and_keras_imports_use_leaf_names():
  """`from_config` and `from_keras` keep Keras's name semantics."""
  params = _keras_named_params()
  opt = ox.from_config(ox.get_config(ox.adam(
      weight_decay=0.1, exclude_from_weight_decay=["^bias$"])))
  expected = {"encoder": {"dense": {"kernel": True, "bias": False},
                          "norm": {"gamma": True, "beta": True}},
              "head": {"kernel": True, "bias": False}}
  assert ox.decay_mask(params, None,
                       opt.config["exclude_from_weight_decay"]) == expected
  keras_opt, _ = build_keras("adamax", params, exclude=["^bias$"],
                             weight_decay=0.1)
  imported, _ = ox.from_keras(keras_opt, params)
  assert ox.decay_mask(params, imported.config["weight_decay_mask"],
                       imported.config["exclude_from_weight_decay"]) == (
                           expected)


def test_invalid_pattern_is_refused_at_construction():
  for bad in (["bias("], ["path:enc[oder"]):
    with pytest.raises(ValueError, match="exclude_from_weight_decay"):
      ox.adam(weight_decay=0.1, exclude_from_weight_decay=bad)
