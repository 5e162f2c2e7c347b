"""What is particular to Muon: routing by path, Newton-Schulz, two decays.

Keras routes each variable by ``variable.path``; here the path is the leaf's
key path joined with "/". The parity runs build the Keras variables under
``keras.name_scope``s so that their Keras paths are exactly those strings
(``encoder/dense/kernel``), and feed both optimizers 28 steps of varied
gradients on a tree with rank-0, rank-1, rank-2 (wide, tall and square),
rank-3 and an embedding leaf. Tolerance as in test_aliases (1e-6; measured
deviations are 0 to 1.2e-7).
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
from optax_suite._rules import muon as muon_module  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import ours_trajectory  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

STEPS = 28
TOL = 1e-6


def tree(seed=0):
  rng = np.random.default_rng(seed)
  f = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  return {
      "encoder": {"dense": {"kernel": f(4, 6), "bias": f(6)},
                  "conv": {"kernel": f(3, 2, 4)}},
      "decoder": {"dense": {"kernel": f(6, 3)}},
      "embedding": {"embeddings": f(5, 4)},
      "head": {"kernel": f(3, 3)},
      "scale": f(),
  }


def keras_run(params, grads, **kwargs):
  """Keras Muon on variables whose Keras paths are our "/"-joined paths."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  variables = []
  for path, leaf in flat:
    parts = _trees.path_name(path).split("/")
    with contextlib.ExitStack() as scopes:
      for part in parts[:-1]:
        scopes.enter_context(keras.name_scope(part))
      variables.append(keras.Variable(np.asarray(leaf), name=parts[-1]))
  assert [v.path for v in variables] == [
      _trees.path_name(p) for p, _ in flat]
  opt = keras.optimizers.Muon(**kwargs)
  opt.build(variables)
  step = jax.jit(lambda o, t, g: opt.stateless_apply(o, g, t))
  opt_vars, train = [v.value for v in opt.variables], [v.value for v in
                                                       variables]
  out = []
  treedef = jax.tree.structure(params)
  for g in grads:
    train, opt_vars = step(opt_vars, train, jax.tree.leaves(g))
    out.append(jax.tree.unflatten(treedef, [np.asarray(v) for v in train]))
  return out, opt


def rule_state(state):
  return _trees.find_nodes(state, ox.ScaleByMuonState)[0]


def newton_schulz_leaves(state):
  inner = rule_state(state)
  return jax.tree_util.tree_map_with_path(
      lambda p, m, v: _trees.path_name(p) if v is None else "",
      inner.mu, inner.nu, is_leaf=lambda x: x is None)


@pytest.mark.parametrize("kwargs,newton_schulz", [
    (dict(learning_rate=0.02),
     {"encoder/dense/kernel", "decoder/dense/kernel", "head/kernel"}),
    (dict(learning_rate=0.02, exclude_embeddings=False, rms_rate=None,
          weight_decay=0.05, adam_weight_decay=0.2),
     {"encoder/dense/kernel", "decoder/dense/kernel", "head/kernel",
      "embedding/embeddings"}),
    (dict(learning_rate=0.01, exclude_layers=["^decoder/", "head"],
          nesterov=False, adam_lr_ratio=0.5),
     {"encoder/dense/kernel"}),
], ids=["default", "embeddings-in", "exclude-layers"])
def test_parity_with_keras_routed_by_path(kwargs, newton_schulz):
  """Ranks 0-3, wide/tall/square matrices, an embedding and excluded layers
  take the branch Keras gives them and Keras's numbers, step by step."""
  params = tree(0)
  grads = varied_grads(params, STEPS, seed=1)
  expected, k_opt = keras_run(params, grads, **kwargs)
  actual, state = ours_trajectory(ox.muon(**kwargs), params, grads)
  assert max_deviation(expected, actual) <= TOL
  # The routing itself: Keras's velocity slots sit on the Adam variables.
  keras_adam = {v.path for v, vel in zip(k_opt._trainable_variables,
                                         k_opt.adam_velocities)
                if vel is not None}
  ours = set(jax.tree.leaves(newton_schulz_leaves(state))) - {""}
  assert ours == newton_schulz
  all_paths = {_trees.path_name(p) for p, _ in
               jax.tree_util.tree_flatten_with_path(params)[0]}
  assert keras_adam == all_paths - newton_schulz
  moved = max(float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree.leaves(actual[-1]), jax.tree.leaves(params)))
  assert moved > 1e-3


def test_path_name_joins_keys_like_keras_layer_paths():
  """Dict keys, sequence indices and attribute names joined with "/"."""
  class Holder:  # a registered dataclass-like node with attribute keys
    pass

  params = {"blocks": [{"attn": {"query": jnp.ones((2, 2))}}],
            "Embed_0": {"embedding": jnp.ones((3, 2))}}
  names = [_trees.path_name(p) for p, _ in
           jax.tree_util.tree_flatten_with_path(params)[0]]
  assert names == ["Embed_0/embedding", "blocks/0/attn/query"]
  del Holder
  attr_path = (jax.tree_util.GetAttrKey("layer"),
               jax.tree_util.DictKey("kernel"))
  assert _trees.path_name(attr_path) == "layer/kernel"
  # Flax's Embed param ("embedding") and Keras's ("embedding/embeddings")
  # both count as embeddings; the check is on the lower-cased path.
  m = jnp.ones((3, 2))
  assert not muon_module.uses_newton_schulz("Embed_0/embedding", m)
  assert not muon_module.uses_newton_schulz("tok/EMBEDDING", m)
  assert muon_module.uses_newton_schulz("tok/EMBEDDING", m,
                                        exclude_embeddings=False)
  assert muon_module.uses_newton_schulz("embed/kernel", m)
  assert not muon_module.uses_newton_schulz("out/kernel", m, ["out"])
  assert not muon_module.uses_newton_schulz("w", jnp.ones((2, 2, 2)))
  assert not muon_module.uses_newton_schulz("w", jnp.ones((2, 2), jnp.int32))


def test_scale_by_muon_alone_in_an_optax_chain():
  """The rule chained with optax.scale(-1) (learning rate inside the rule)
  equals Keras Muon without weight decay."""
  params = tree(2)
  grads = varied_grads(params, STEPS, seed=2)
  kw = dict(learning_rate=0.02, weight_decay=None, adam_weight_decay=None)
  expected, _ = keras_run(params, grads, **kw)
  tx = optax.chain(ox.scale_by_muon(0.02), optax.scale(-1.0))
  actual, _ = ours_trajectory(
      optax.GradientTransformationExtraArgs(
          tx.init, lambda g, s, p=None: tx.update(g, s, p)), params, grads)
  assert max_deviation(expected, actual) <= TOL


def test_newton_schulz_is_one_device_loop_compiled_once():
  """The iteration is one `while` in the compiled step (not unrolled, no
  host callback), is traced once for any number of steps, and a traced
  ns_steps (inject_hyperparams) gives the static numbers."""
  params = tree(3)
  opt = ox.muon(learning_rate=0.02, ns_steps=7)
  state = opt.init(params)
  grads = varied_grads(params, 1, seed=3)[0]
  jaxpr = str(jax.make_jaxpr(opt.update)(grads, state, params))
  assert "scan" in jaxpr or "while" in jaxpr
  assert "callback" not in jaxpr
  assert jaxpr.count("dot_general") <= 3 * 3 + 2  # 3 per loop body x 3.
  traces = []
  step = jax.jit(lambda g, s, p: (traces.append(1), opt.update(g, s, p))[1])
  for g in varied_grads(params, 4, seed=4):
    _, state = step(g, state, params)
  assert len(traces) == 1
  grads_seq = varied_grads(params, 10, seed=5)
  direct, _ = ours_trajectory(opt, params, grads_seq)
  injected, st = ours_trajectory(
      ox.inject_hyperparams(ox.muon)(learning_rate=0.02, ns_steps=7),
      params, grads_seq)
  assert max_deviation(direct, injected) <= 1e-6


def test_newton_schulz_orthogonalizes():
  """Enough iterations of a convergent (a, b, c) give U V^T of the SVD."""
  x = jax.random.normal(jax.random.key(0), (5, 3))
  u, _, vt = jnp.linalg.svd(x, full_matrices=False)
  got = muon_module.newton_schulz(x, 1.5, -0.5, 0.0, 60)
  np.testing.assert_allclose(got, u @ vt, atol=1e-4)
  # Keras's quintic coefficients leave singular values roughly in
  # [0.7, 1.2] after 5 steps (not exactly 1, as Keras documents).
  s = jnp.linalg.svd(muon_module.newton_schulz(x, 3.4445, -4.7750, 2.0315,
                                               5), compute_uv=False)
  assert bool(jnp.all((s > 0.6) & (s < 1.3))), s


def test_weight_decay_rates_by_branch():
  """weight_decay acts on Newton-Schulz leaves, adam_weight_decay on the
  others, each with the full learning rate (also under adam_lr_ratio);
  exclusions and None turn each off."""
  params = {"w": jnp.full((2, 2), 2.0), "b": jnp.full((2,), 2.0)}
  zero = jax.tree.map(jnp.zeros_like, params)

  def step(**kw):
    opt = ox.muon(learning_rate=0.1, adam_lr_ratio=0.5, **kw)
    u, _ = opt.update(zero, opt.init(params), params)
    return jax.tree.map(lambda x: float(x.ravel()[0]), u)

  assert step(weight_decay=0.5, adam_weight_decay=0.25) == {
      "w": pytest.approx(-0.1), "b": pytest.approx(-0.05)}
  assert step(weight_decay=None, adam_weight_decay=0.25) == {
      "w": 0.0, "b": pytest.approx(-0.05)}
  assert step(weight_decay=0.5, adam_weight_decay=None,
              exclude_from_weight_decay=["w"]) == {"w": 0.0, "b": 0.0}
  opt = ox.muon(weight_decay=None, adam_weight_decay=None)
  opt.update(zero, opt.init(params))  # No decay: params are not needed.
  with pytest.raises(ValueError, match="params"):
    opt = ox.muon(weight_decay=None)
    opt.update(zero, opt.init(params))


def test_low_precision_leaves_computed_in_float32():
  """bfloat16 params: Newton-Schulz and Adam run in float32, stay finite,
  slots keep bfloat16, and the result is the float32 run's, rounded."""
  params = tree(4)
  grads = varied_grads(params, 10, seed=6)
  opt = ox.muon(learning_rate=0.02)
  f32, _ = ours_trajectory(opt, params, grads)
  low = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  low_grads = [jax.tree.map(lambda x: x.astype(jnp.bfloat16), g)
               for g in grads]
  bf, state = ours_trajectory(opt, low, low_grads)
  assert all(bool(jnp.all(jnp.isfinite(x.astype(np.float32))))
             for x in jax.tree.leaves(bf[-1]))
  assert all(m.dtype == jnp.bfloat16 for m in
             jax.tree.leaves(rule_state(state).mu))
  assert max_deviation(f32[-1:], [jax.tree.map(
      lambda x: np.asarray(x, np.float32), bf[-1])]) < 0.1


@pytest.mark.parametrize("kwargs,arg", [
    (dict(momentum=1.0), "momentum"),
    (dict(adam_beta_1=-0.1), "adam_beta_1"),
    (dict(ns_steps=-1), "ns_steps"),
    (dict(ns_steps=2.5), "ns_steps"),
    (dict(rms_rate=-0.2), "rms_rate"),
    (dict(adam_lr_ratio=float("nan")), "adam_lr_ratio"),
    (dict(adam_weight_decay=-1.0), "adam_weight_decay"),
    (dict(exclude_layers="dense"), "exclude_layers"),
    (dict(muon_a="x"), "muon_a"),
    (dict(weight_decay=-0.1), "weight_decay"),
])
def test_bad_muon_arguments_refused(kwargs, arg):
  with pytest.raises(ValueError, match=arg):
    ox.muon(**kwargs)


def test_state_from_keras_refuses_other_routing():
  """Keras's velocity slots sit on its Adam variables; importing them into
  a muon that routes differently (here every leaf to Adam) is refused."""
  params = tree(5)
  grads = varied_grads(params, 3, seed=7)
  _, k_opt = keras_run(params, grads, learning_rate=0.01)
  values = [v.value for v in k_opt.variables]
  state = ox.state_from_keras(ox.muon(0.01), k_opt, params, values)
  assert rule_state(state).nu["head"]["kernel"] is None
  with pytest.raises(ValueError, match="velocity|nu|routing"):
    ox.state_from_keras(ox.muon(0.01, exclude_layers=[".*"]), k_opt, params,
                        values)
