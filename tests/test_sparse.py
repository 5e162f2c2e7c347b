"""Row-sparse (BCOO) gradients: Keras 3's numbers by default, tf.keras's lazy
row updates with ``lazy_rows=True``.

The parameter tree is ``make_params`` plus an embedding table; the table's
gradient is a ``BCOO`` with repeated rows and absent rows, drawn afresh at
every step, the other leaves get ``varied_grads``.
"""

import os
import re

os.environ.setdefault("KERAS_BACKEND", "jax")

import hypothesis  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
from jax.experimental import sparse  # noqa: E402

import optax_suite as ox  # noqa: E402
from optax_suite._options import sparse as _sparse  # noqa: E402
from catalog import CATALOG  # noqa: E402
from catalog import KINDS  # noqa: E402

# The optimizers that take lazy_rows: the others (a per-leaf trust ratio,
# factored moments, orthogonalization) refuse it at construction.
from catalog import NOT_ROW_SEPARABLE  # noqa: E402
from catalog import ROW_SEPARABLE as LAZY_KINDS  # noqa: E402
from helpers import DIM  # noqa: E402
from helpers import ROWS  # noqa: E402
from helpers import grad_seq  # noqa: E402
from helpers import row_grads  # noqa: E402
from helpers import run_child  # noqa: E402
from helpers import table_params  # noqa: E402
from keras_oracle import build_keras  # noqa: E402
from keras_oracle import make_params  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

STEPS = 28
ATOL = RTOL = 1e-6


def dense_of(grads):
  return jax.tree.map(lambda g: g.todense() if isinstance(g, sparse.BCOO)
                      else g, grads,
                      is_leaf=lambda x: isinstance(x, sparse.BCOO))


def trajectory(opt, params, grads_seq, fused=False):
  """Params and state after each jitted step (update + ox.apply_updates)."""
  state = opt.init(params)

  @jax.jit
  def step(params, state, grads):
    if fused:
      return ox.apply(opt, grads, state, params)
    updates, state = opt.update(grads, state, params)
    return ox.apply_updates(params, updates), state

  out = []
  for g in grads_seq:
    params, state = step(params, state, g)
    out.append((jax.tree.map(np.asarray, params),
                jax.tree.map(np.asarray, state)))
  return out


def keras_bcoo_trajectory(kind, params, grads_seq, **kwargs):
  """Keras's ``stateless_apply`` (eagerly: under jit Keras's BCOO path needs
  a static nse) on the same gradients, BCOO leaves as BCOO."""
  opt, variables = build_keras(kind, params, **kwargs)
  treedef = jax.tree.structure(params)
  train, opt_vars = [v.value for v in variables], [v.value for v in opt.variables]
  out = []
  for g in grads_seq:
    leaves = treedef.flatten_up_to(g)
    train, opt_vars = opt.stateless_apply(opt_vars, leaves, train)
    out.append(jax.tree.unflatten(treedef, [np.asarray(v) for v in train]))
  return out


def assert_close(expected, actual):
  for step, (e, a) in enumerate(zip(expected, actual)):
    for x, y in zip(jax.tree.leaves(e), jax.tree.leaves(a)):
      np.testing.assert_allclose(y, x, rtol=RTOL, atol=ATOL,
                                 err_msg=f"step {step}")


# Keras 3 accepts a BCOO gradient with these base options (its clipping,
# global norm and accumulation code raise on a BCOO).
KERAS_BCOO_OPTIONS = {
    "plain": {},
    "decay_ema_scale": dict(weight_decay=0.02, use_ema=True, ema_momentum=0.8,
                            ema_overwrite_frequency=3, loss_scale_factor=4.0),
}


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("option", sorted(KERAS_BCOO_OPTIONS))
@pytest.mark.parametrize("kind", KINDS)
def test_default_mode_matches_keras_with_bcoo_gradients(kind, option):
  """Without lazy_rows a BCOO gradient gives Keras 3's numbers for the same
  BCOO (Keras sums it into the dense gradient); 28 steps."""
  params = table_params(1)
  grads = grad_seq(params, STEPS, seed=1)
  kw = dict(KERAS_BCOO_OPTIONS[option])
  if CATALOG[kind].parity_learning_rate is not None:
    kw["learning_rate"] = CATALOG[kind].parity_learning_rate
  try:
    expected = keras_bcoo_trajectory(kind, params, grads, **kw)
  except (NotImplementedError, TypeError, ValueError) as e:
    # A Keras rule that cannot take a BCOO: Keras's numbers are then those of
    # the dense gradient, which Keras accepts.
    print(f"Keras {kind} refuses a BCOO ({type(e).__name__}); dense oracle")
    expected = keras_bcoo_trajectory(kind, params, dense_of(grads), **kw)
  actual = [p for p, _ in trajectory(getattr(ox, kind)(**kw), params, grads)]
  assert_close(expected, actual)
  assert not np.allclose(actual[-1]["embed"][2:], params["embed"][2:])


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("kind", KINDS)
def test_default_mode_equals_the_dense_sum_with_every_option(kind):
  """With the options Keras refuses a BCOO for (clipping, accumulation) the
  default mode still equals the dense summed gradient, bit for bit."""
  params = table_params(2)
  grads = grad_seq(params, 12, seed=2)
  kw = dict(clipnorm=0.7, weight_decay=0.01, use_ema=True,
            ema_overwrite_frequency=3, gradient_accumulation_steps=2)
  opt = getattr(ox, kind)(**kw)
  sparse_run = trajectory(opt, params, grads)
  dense_run = trajectory(opt, params, dense_of(grads))
  for (p, s), (q, r) in zip(sparse_run, dense_run):
    jax.tree.map(np.testing.assert_array_equal, (p, s), (q, r))


# --------------------------------------------------------------------------
# lazy_rows=True


def tf_keras_sparse_adamax(table, grads, learning_rate, beta_1, beta_2,
                           epsilon):
  """tf.keras's sparse Adamax (``_resource_apply_sparse``) in numpy, from its
  published rule: duplicate rows summed, then on the touched rows only

    m = beta_1 m + (1 - beta_1) g;  v = max(beta_2 v, |g|)
    w -= lr / (1 - beta_1^t) * m / (v + epsilon)

  with t the global step. float32 throughout, as tf.keras runs it."""
  f = np.float32
  w = np.array(table, f)
  m, v = np.zeros_like(w), np.zeros_like(w)
  out = []
  for t, g in enumerate(grads, start=1):
    ids = np.asarray(g.indices[:, 0])
    rows = np.unique(ids)
    summed = np.zeros((len(rows),) + w.shape[1:], f)
    np.add.at(summed, np.searchsorted(rows, ids), np.asarray(g.data, f))
    m[rows] = f(beta_1) * m[rows] + f(1 - beta_1) * summed
    v[rows] = np.maximum(f(beta_2) * v[rows], np.abs(summed))
    step = f(learning_rate) / (f(1) - f(beta_1) ** f(t))
    w[rows] = w[rows] - step * (m[rows] / (v[rows] + f(epsilon)))
    out.append((w.copy(), m.copy(), v.copy()))
  return out


def assert_lazy_adamax_follows_tf_keras(table, grads, name):
  """lazy_rows Adamax on `table` (leaf `name`) against tf.keras's sparse
  Adamax (numpy, above), step by step; rows absent at a step keep every bit
  of the table, m and v, and rows never touched (0 and 1) stay as they
  started, while the others move."""
  kw = dict(learning_rate=0.05, beta_1=0.8, beta_2=0.9, epsilon=1e-4)
  ref = tf_keras_sparse_adamax(table, grads, **kw)
  ours = trajectory(ox.adamax(**kw, lazy_rows=True), {name: table},
                    [{name: g} for g in grads])
  before = (np.asarray(table), np.zeros(table.shape), np.zeros(table.shape))
  for t, ((w, m, v), (p, s)) in enumerate(zip(ref, ours)):
    rule = s.inner[1]  # The chain is (clip, rule, decay).
    got = (p[name], rule.m[name], rule.u[name])
    # Keras's m + (g - m)(1 - beta_1) rounds unlike tf's beta_1 m +
    # (1 - beta_1) g; |m| reaches ~20, where a float32 ulp is 2e-6.
    for want, have in zip((w, m, v), got):
      np.testing.assert_allclose(have, want, rtol=2e-6, atol=1e-6,
                                 err_msg=f"step {t}")
    absent = np.setdiff1d(np.arange(ROWS), np.asarray(grads[t].indices))
    for old, new in zip(before, got):
      np.testing.assert_array_equal(
          np.asarray(new)[absent].view(np.uint32),
          np.asarray(old, np.float32)[absent].view(np.uint32))
    before = got
  np.testing.assert_array_equal(ours[-1][0][name][:2], table[:2])
  assert np.abs(ours[-1][0][name][2:] - table[2:]).max() > 1e-2


def test_lazy_adamax_matches_tf_keras_sparse_reference():
  """lazy_rows Adamax follows tf.keras's sparse Adamax over 30 steps with
  repeated and absent rows; rows absent at a step keep every bit of the
  table, m and v, and rows never touched (0 and 1) stay as they started."""
  table = jnp.asarray(np.random.default_rng(7).normal(size=(ROWS, DIM)),
                      jnp.float32)
  assert_lazy_adamax_follows_tf_keras(table, row_grads(30, seed=7, nnz=4),
                                      "embed")


LAZY_OPTIONS = {
    "plain": {},
    "everything": dict(clipnorm=0.9, weight_decay=0.01, use_ema=True,
                       ema_momentum=0.7, ema_overwrite_frequency=3,
                       loss_scale_factor=8.0, gradient_accumulation_steps=2),
    "global_clip_ema": dict(global_clipnorm=0.5, use_ema=True,
                            weight_decay=0.05),
}


def _lazy_kwargs(kind, option):
  kw = dict(LAZY_OPTIONS[option], lazy_rows=True)
  if CATALOG[kind].parity_learning_rate is not None:
    kw["learning_rate"] = CATALOG[kind].parity_learning_rate
  return kw


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("option", sorted(LAZY_OPTIONS))
@pytest.mark.parametrize("kind", LAZY_KINDS)
def test_lazy_rows_touching_every_row_is_the_dense_rule(kind, option):
  """A BCOO that touches every row (in shuffled order) moves the table as
  the dense rule does: lazy rows are the dense rule on a variable made of
  the touched rows, with every base option."""
  params = table_params(3)
  grads = grad_seq(params, 12, seed=3, all_rows=True)
  kw = _lazy_kwargs(kind, option)
  lazy = trajectory(getattr(ox, kind)(**kw), params, grads)
  dense = trajectory(getattr(ox, kind)(**dict(kw, lazy_rows=False)), params,
                     dense_of(grads))
  for (p, _), (q, _) in zip(lazy, dense):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=1e-6, atol=1e-7), p, q)


def _param_shaped(state):
  """Every (ROWS, DIM) array in the state: the table's slots."""
  return [x for x in jax.tree.leaves(state)
          if getattr(x, "shape", None) == (ROWS, DIM)]


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("option", sorted(LAZY_OPTIONS))
@pytest.mark.parametrize("kind", LAZY_KINDS)
def test_lazy_rows_leave_untouched_rows_bitwise(kind, option):
  """Rows touched by no gradient of an accumulation cycle keep every bit of
  the table and of every slot (moments, accumulator, EMA); the touched rows
  move; the dense leaves move as without lazy_rows."""
  params = table_params(4)
  params["embed"] = params["embed"].at[0, 0].set(-0.0)
  grads = grad_seq(params, 12, seed=4)
  kw = _lazy_kwargs(kind, option)
  k = kw.get("gradient_accumulation_steps") or 1
  opt = getattr(ox, kind)(**kw)
  run = trajectory(opt, params, grads)
  prev_p, prev_s = params, opt.init(params)
  for t, (p, s) in enumerate(run):
    cycle = grads[t - t % k: t + 1]
    seen = np.unique(np.concatenate([np.asarray(g["embed"].indices[:, 0])
                                     for g in cycle]))
    untouched = np.setdiff1d(np.arange(ROWS), seen)
    for old, new in zip([prev_p["embed"]] + _param_shaped(prev_s),
                        [p["embed"]] + _param_shaped(s)):
      np.testing.assert_array_equal(
          np.asarray(new)[untouched].view(np.uint32),
          np.asarray(old)[untouched].view(np.uint32), err_msg=f"step {t}")
    prev_p, prev_s = p, s
  assert np.signbit(run[-1][0]["embed"][0, 0])
  assert np.abs(run[-1][0]["embed"][2:] - params["embed"][2:]).max() > 1e-3
  dense_run = trajectory(getattr(ox, kind)(**dict(kw, lazy_rows=False)),
                         params, grads)
  if "global_clipnorm" not in kw:  # The global norm mixes the leaves.
    np.testing.assert_allclose(run[-1][0]["dense"]["kernel"],
                               dense_run[-1][0]["dense"]["kernel"],
                               rtol=1e-6, atol=1e-7)


def test_lazy_update_is_row_sparse_and_optax_apply_updates_agrees():
  """update returns a BCOO for a BCOO gradient; optax.apply_updates (via
  BCOO's own addition) gives the same numbers as ox.apply_updates, eagerly
  and jitted; ox.apply_updates keeps an untouched -0.0 (optax's eager
  addition densifies the update and makes it +0.0)."""
  params = table_params(5)
  params["embed"] = params["embed"].at[0].set(-0.0)
  opt = ox.adam(0.1, lazy_rows=True, weight_decay=0.1)
  g = grad_seq(params, 1, seed=5)[0]
  updates, _ = jax.jit(opt.update)(g, opt.init(params), params)
  assert isinstance(updates["embed"], sparse.BCOO)
  assert not isinstance(updates["dense"]["kernel"], sparse.BCOO)
  ours = ox.apply_updates(params, updates)
  for theirs in (optax.apply_updates(params, updates),
                 jax.jit(optax.apply_updates)(params, updates)):
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)
  assert np.signbit(ours["embed"][0]).all()
  assert not np.array_equal(ours["embed"][2:], params["embed"][2:])


def test_lazy_rows_with_dynamic_loss_scale_skips_a_non_finite_row():
  """Under loss_scale_optimizer one non-finite row skips the whole step:
  table, slots and counts stay as they were, the scale halves."""
  params = table_params(6)
  opt = ox.loss_scale_optimizer(ox.adamax(0.1, lazy_rows=True),
                                initial_scale=4.0)
  state = opt.init(params)
  g = grad_seq(params, 2, seed=6)
  p1, s1 = jax.jit(lambda g, s, p: ox.apply(opt, g, s, p))(g[0], state,
                                                           params)
  bad = g[1]["embed"]
  bad = sparse.BCOO((bad.data.at[1, 0].set(jnp.inf), bad.indices),
                    shape=bad.shape)
  p2, s2 = jax.jit(lambda g, s, p: ox.apply(opt, g, s, p))(
      dict(g[1], embed=bad), s1, p1)
  jax.tree.map(np.testing.assert_array_equal, p2, p1)
  jax.tree.map(np.testing.assert_array_equal, s2.inner_state, s1.inner_state)
  assert float(s2.scale) == float(s1.scale) / 2


def test_scale_by_rule_lazy_rows():
  """scale_by_adam(lazy_rows=True) alone: only the touched rows of mu and nu
  change and the update is row-sparse."""
  tx = ox.scale_by_adam(lazy_rows=True)
  table = jnp.ones((ROWS, DIM))
  g = row_grads(1, seed=8)[0]
  u, s = tx.update(g, tx.init(table), table)
  rows = np.unique(np.asarray(g.indices))
  others = np.setdiff1d(np.arange(ROWS), rows)
  assert isinstance(u, sparse.BCOO)
  assert (np.asarray(s.mu)[others] == 0).all()
  assert (np.asarray(s.mu)[rows] != 0).any()
  np.testing.assert_allclose(u.todense(), ox.scale_by_adam().update(
      dense_of(g), ox.scale_by_adam().init(table))[0], rtol=1e-6)


# --------------------------------------------------------------------------
# Bad input


def _bad(kind):
  table = jnp.zeros((ROWS, DIM))
  data = jnp.ones((2, DIM))
  if kind == "batched":
    return sparse.BCOO.fromdense(jnp.ones((2, ROWS, DIM)), n_batch=1)
  if kind == "n_dense_0":
    return sparse.BCOO.fromdense(table.at[1, 1].set(1.0))
  if kind == "shape":
    return sparse.BCOO((data, jnp.array([[0], [1]])), shape=(ROWS + 1, DIM))
  if kind == "range":
    return sparse.BCOO((data, jnp.array([[0], [ROWS]])), shape=(ROWS, DIM))
  return sparse.BCOO((data, jnp.array([[-1], [1]])), shape=(ROWS, DIM))


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("bad", ["batched", "n_dense_0", "shape", "range",
                                 "negative"])
def test_bad_bcoo_names_the_leaf_and_the_problem(bad, lazy):
  """Another layout, another shape, or (eagerly) a row out of range: a
  ValueError naming the leaf's path and what is wrong."""
  params = {"layer": {"table": jnp.zeros((ROWS, DIM))}}
  opt = ox.adam(lazy_rows=lazy)
  state = opt.init(params)
  words = {"batched": "n_batch=1", "n_dense_0": "n_dense=0",
           "shape": "shape", "range": "indices", "negative": "indices"}[bad]
  with pytest.raises(ValueError, match=words) as info:
    opt.update({"layer": {"table": _bad(bad)}}, state, params)
  assert "['layer']['table']" in str(info.value)


def test_out_of_range_rows_are_dropped_under_jit():
  """Under jit the indices cannot be checked: a row out of range is dropped
  (neither summed into another row nor written), in both modes."""
  params = {"t": jnp.ones((ROWS, DIM))}
  g = sparse.BCOO((jnp.ones((3, DIM)), jnp.array([[1], [ROWS + 3], [-2]])),
                  shape=(ROWS, DIM))
  ok = sparse.BCOO((jnp.ones((1, DIM)), jnp.array([[1]])), shape=(ROWS, DIM))
  for lazy in (False, True):
    opt = ox.adam(0.1, lazy_rows=lazy)
    step = jax.jit(lambda g, s, p: ox.apply(opt, g, s, p))
    p_bad, _ = step({"t": g}, opt.init(params), params)
    p_ok, _ = step({"t": ok}, opt.init(params), params)
    np.testing.assert_array_equal(p_bad["t"], p_ok["t"])


def test_lazy_rows_must_be_a_bool():
  with pytest.raises(ValueError, match="lazy_rows=1"):
    ox.adam(lazy_rows=1)


def test_a_rule_that_mixes_rows_refuses_lazy_rows():
  """``build`` told a KerasSpec with row_separable=False refuses lazy_rows at
  construction (LAMB, Adafactor and Muon say so), and builds without it."""
  import dataclasses
  from optax_suite import _base_options
  from optax_suite import _optimizer
  from optax_suite._factories import adam as adam_module
  spec = dataclasses.replace(adam_module.KERAS, row_separable=False,
                             default_name="fake")

  def fake(lazy_rows=False):
    return _optimizer.build(
        spec, lambda lr: ox.scale_by_adam(lr),
        _base_options.BaseOptions(lazy_rows=lazy_rows), {}, name=None)
  with pytest.raises(ValueError, match="lazy_rows=True"):
    fake(lazy_rows=True)
  assert fake(lazy_rows=False).config["name"] == "fake"
  assert _optimizer.build(
      adam_module.KERAS, lambda lr: ox.scale_by_adam(lr),
      _base_options.BaseOptions(lazy_rows=True), {},
      name=None).config["lazy_rows"] is True


def test_lazy_rows_round_trips_through_the_config():
  opt = ox.adamax(0.01, lazy_rows=True)
  config = ox.get_config(opt)
  assert config["config"]["lazy_rows"] is True
  assert ox.from_config(config).config["lazy_rows"] is True
  assert "lazy_rows" not in ox.get_config(ox.adamax())["config"]


# --------------------------------------------------------------------------
# Sharding: a row-sharded table on the 8 fake devices of test_sharding.py.

SHARDED_CHILD = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from jax.experimental import sparse
import optax_suite as ox

names, options, steps = json.loads(sys.argv[1])
mesh = jax.make_mesh((8,), ("rows",), axis_types=(AxisType.Auto,))
ROWS, DIM, NNZ = 64, 8, 12
rng = np.random.default_rng(0)
host = {"table": rng.standard_normal((ROWS, DIM)).astype(np.float32),
        "dense": rng.standard_normal((DIM, 4)).astype(np.float32)}
shard = {"table": NamedSharding(mesh, P("rows", None)),
         "dense": NamedSharding(mesh, P())}
params = jax.device_put(host, shard)
grads = []
for t in range(steps):
  ids = rng.integers(0, ROWS, size=NNZ); ids[-1] = ids[0]
  grads.append((rng.standard_normal((NNZ, DIM)).astype(np.float32),
                ids[:, None].astype(np.int32),
                rng.standard_normal((DIM, 4)).astype(np.float32)))
def as_tree(g):
  return {"table": sparse.BCOO((jnp.asarray(g[0]), jnp.asarray(g[1])), shape=(ROWS, DIM)),
          "dense": jnp.asarray(g[2])}
out = {}
for name in names:
  opt = getattr(ox, name)(learning_rate=0.05, lazy_rows=True, **options)
  step = jax.jit(lambda p, s, g: ox.apply(opt, g, s, p), donate_argnums=(0, 1))
  p, s = jax.tree.map(jnp.copy, params), jax.jit(opt.init)(params)
  hlo = step.lower(p, s, as_tree(grads[0])).compile().as_text()
  bad = []
  for g in grads:
    p, s = step(p, s, as_tree(g))
    for path, leaf in jax.tree_util.tree_flatten_with_path((p, s))[0]:
      if leaf.shape[:1] == (ROWS,) and not leaf.sharding.is_equivalent_to(
          NamedSharding(mesh, P("rows", *[None] * (leaf.ndim - 1))), leaf.ndim):
        bad.append(jax.tree_util.keystr(path) + str(leaf.sharding))
  one = jax.devices()[0]
  p1 = jax.device_put(host, one); s1 = opt.init(p1)
  step1 = jax.jit(lambda p, s, g: ox.apply(opt, g, s, p))  # Compiled once.
  for g in grads:
    p1, s1 = step1(p1, s1, as_tree(g))
  dev = lambda a, b: max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)), initial=0))
                         for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  import re
  gathers = [l.strip()[:200] for l in hlo.splitlines()
             if re.search(r"\\sall-gather(-start)?\\(", l)]
  big = [l for l in gathers if f"f32[{ROWS},{DIM}]" in l or f"[{ROWS},{DIM}]" in l]
  slots = sum(1 for leaf in jax.tree.leaves(s) if leaf.shape == (ROWS, DIM))
  out[name] = {"bad": sorted(set(bad)), "params": dev(p, p1), "state": dev(s, s1),
               "table_gathers": big, "all_gathers": gathers[:5], "slots": slots}
print("JSON" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def row_sharded():
  import json
  options = dict(use_ema=True, weight_decay=0.01, global_clipnorm=1.0,
                 gradient_accumulation_steps=2, ema_overwrite_frequency=3)
  stdout = run_child(["-c", SHARDED_CHILD, json.dumps(
      [list(LAZY_KINDS), options, 6])], timeout=900)
  line = [l for l in stdout.splitlines() if l.startswith("JSON")][-1]
  return json.loads(line[4:])


@pytest.mark.slow
@pytest.mark.parametrize("kind", LAZY_KINDS)
def test_row_sharded_table_with_lazy_rows(row_sharded, kind):
  """A (64, 8) table sharded by rows over 8 devices, six jitted lazy steps
  with accumulation, EMA, decay and global clipping: the table, its slots,
  accumulator, EMA and touched-row marks stay on their row sharding, the
  run equals the one-device run, and the compiled step all-gathers neither
  the table nor a slot."""
  out = row_sharded[kind]
  assert out["bad"] == []
  # Moments, accumulator and EMA were checked (SGD at its default momentum
  # 0 keeps no velocity, as Keras).
  assert out["slots"] >= (2 if kind == "sgd" else 3)
  assert out["params"] <= 1e-6 and out["state"] <= 1e-5
  assert out["table_gathers"] == []
  # The only all-gather is the update call's list of rows touched in the
  # accumulation cycle: a prefix sum over the [rows] marks (4 bytes a row).
  assert all(re.search(r"= (s32|pred)\[64\]\{0\} all-gather", g)
             for g in out["all_gathers"]), out["all_gathers"]


@pytest.mark.parametrize("kind", NOT_ROW_SEPARABLE)
def test_rules_that_mix_rows_refuse_lazy_rows(kind):
  """Lamb, Adafactor and Muon cannot run on the touched rows alone."""
  with pytest.raises(ValueError, match="lazy_rows"):
    getattr(ox, kind)(lazy_rows=True)
  getattr(ox, kind)(lazy_rows=False)


_UNIQUE_ROWS = jax.jit(
    lambda data, ids: _sparse.unique_rows(sparse.BCOO((data, ids[:, None]),
                                                 shape=(8, 2))))


@hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
@hypothesis.given(st.lists(st.integers(-3, 11), min_size=16, max_size=16))
def test_unique_rows_sums_each_row_once_in_order(ids):
  """For 16 ids over an 8-row table (repeats, and rows out of range, which
  are dropped), `unique_rows` lists each valid row once, ascending, with the
  sum of its data (numpy's unique and add.at), then pads with the id 8 and
  zero rows: the bookkeeping every lazy step and apply_updates rely on."""
  ids = np.asarray(ids, np.int32)
  data = np.arange(32, dtype=np.float32).reshape(16, 2) - 7.5
  got = _UNIQUE_ROWS(jnp.asarray(data), jnp.asarray(ids))
  valid = (ids >= 0) & (ids < 8)
  want_ids = np.unique(ids[valid])
  want = np.zeros((8, 2), np.float32)
  np.add.at(want, ids[valid], data[valid])
  n = len(want_ids)
  np.testing.assert_array_equal(np.asarray(got.ids)[:n], want_ids)
  np.testing.assert_array_equal(np.asarray(got.ids)[n:], 8)
  np.testing.assert_array_equal(np.asarray(got.data)[:n], want[want_ids])
  np.testing.assert_array_equal(np.asarray(got.data)[n:], 0)


# Issue 18 item 2: the sparse configurations, eagerly and under jax.jit.
EAGER_JIT_OPTIONS = {
    "ema": dict(use_ema=True),
    "ema_overwrite": dict(use_ema=True, ema_overwrite_frequency=2),
    "accumulation": dict(gradient_accumulation_steps=2),
    "accumulation_ema": dict(gradient_accumulation_steps=3, use_ema=True,
                             ema_overwrite_frequency=2),
    "everything": LAZY_OPTIONS["everything"],
}
ROW_SEPARABLE = tuple(k for k in KINDS if CATALOG[k].row_separable)


def _eager_trajectory(opt, params, grads_seq, fused=False):
  state = opt.init(params)
  out = []
  for g in grads_seq:
    if fused:
      params, state = ox.apply(opt, g, state, params)
    else:
      updates, state = opt.update(g, state, params)
      params = ox.apply_updates(params, updates)
    out.append((jax.tree.map(np.asarray, params),
                jax.tree.map(np.asarray, state)))
  return out


def _slow_unless(fast):
  return () if fast else (pytest.mark.slow,)


# One configuration per optimizer runs in the inner loop; the rest are slow.
EAGER_JIT_CASES = [
    pytest.param(kind, option, fused,
                 id=f"{kind}-{option}-{'apply' if fused else 'update'}",
                 marks=_slow_unless(option == "accumulation_ema"
                                    and not fused))
    for kind in ROW_SEPARABLE for option in sorted(EAGER_JIT_OPTIONS)
    for fused in (False, True)]


@pytest.mark.parametrize("kind,option,fused", EAGER_JIT_CASES)
def test_lazy_rows_eager_and_jit_agree(kind, option, fused):
  """Repeated row ids with the EMA (and its overwrite, and accumulation)
  raised eagerly: the EMA's lazy stage refused the padding rows (id
  ``rows``) of the rule's own update, which jit drops. Eager and jitted
  steps now give the same parameters and state."""
  rng = np.random.default_rng(5)
  params = {"embed": jnp.asarray(rng.normal(size=(ROWS, DIM)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(DIM,)), jnp.float32)}
  grads = [{"embed": r, "bias": jnp.asarray(rng.normal(size=(DIM,)),
                                            jnp.float32)}
           for r in row_grads(4, seed=5)]
  kw = dict(EAGER_JIT_OPTIONS[option], lazy_rows=True)
  opt = getattr(ox, kind)(**kw)
  eager = _eager_trajectory(opt, params, grads, fused)
  jitted = trajectory(opt, params, grads, fused)
  for (p, s), (q, r) in zip(eager, jitted):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=2e-6, atol=1e-7), (p, s), (q, r))


def test_lazy_rows_ema_with_one_repeated_row_eagerly():
  """The issue's example: two ids of the same row, eagerly."""
  table = {"embed": jnp.ones((4, 3))}
  g = {"embed": sparse.BCOO((jnp.ones((2, 3)), jnp.array([[1], [1]])),
                            shape=(4, 3))}
  for make in (ox.adam, ox.sgd, ox.adagrad):
    for extra in (dict(use_ema=True),
                  dict(use_ema=True, ema_overwrite_frequency=1),
                  dict(use_ema=True, gradient_accumulation_steps=2)):
      opt = make(0.1, lazy_rows=True, **extra)
      state = opt.init(table)
      for _ in range(2):
        updates, state = opt.update(g, state, table)
      assert np.asarray(ox.apply_updates(table, updates)["embed"])[1, 0] < 1


# --------------------------------------------------------------------------
# Tables of rank 3 (issue 20 item 5): a BCOO of whole rows along axis 0 of a
# (rows, a, b) table, indices [nnz, 1] and data [nnz, a, b] (n_dense=2).

SLAB = (2, DIM)  # One row of the rank-3 table.
CUBE = (ROWS,) + SLAB
CUBE_STEPS = 27


def cube_params(seed):
  """``make_params`` (ranks 0 to 4) plus a (ROWS, 2, DIM) table ``cube``."""
  params = make_params(seed)
  rng = np.random.default_rng(seed + 200)
  params["cube"] = jnp.asarray(rng.normal(size=CUBE), jnp.float32)
  return params


def cube_rows(steps, seed, nnz=6, all_rows=False):
  """Rank-3 BCOO gradients: a repeated row at every step, one row six times
  every 7th step, large values every 5th, exact zeros in places; rows 0 and
  1 never touched (unless ``all_rows``: every row once, shuffled)."""
  return row_grads(steps, seed=seed, nnz=nnz, all_rows=all_rows,
                   row_shape=SLAB, crowded=True)


def cube_grad_seq(params, steps, seed, **kw):
  dense = varied_grads(params, steps, seed=seed)
  return [dict(g, cube=r) for g, r in zip(dense, cube_rows(steps, seed, **kw))]


def test_rank3_row_sparse_bcoo_layout():
  """The gradients these tests use are row-sparse in the sense of the
  issue: n_batch=0, n_sparse=1, n_dense=2, with repeated rows."""
  g = cube_rows(4, seed=0)[3]
  assert (g.n_batch, g.n_sparse, g.n_dense) == (0, 1, 2)
  assert g.indices.shape == (6, 1) and g.data.shape == (6,) + SLAB
  assert len(np.unique(np.asarray(g.indices))) == 1  # Step 3: one row.
  _sparse.check_row_sparse({"cube": g}, {"cube": jnp.zeros(CUBE)})


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("option", sorted(KERAS_BCOO_OPTIONS))
@pytest.mark.parametrize("kind", KINDS)
def test_default_mode_matches_keras_with_rank3_bcoo_gradients(kind, option):
  """Without lazy_rows a BCOO gradient of a rank-3 table gives Keras 3's
  numbers for the same BCOO (every leaf, 27 steps; Adafactor: below)."""
  params = cube_params(11)
  grads = cube_grad_seq(params, CUBE_STEPS, seed=11)
  kw = dict(KERAS_BCOO_OPTIONS[option])
  if CATALOG[kind].parity_learning_rate is not None:
    kw["learning_rate"] = CATALOG[kind].parity_learning_rate
  expected = keras_bcoo_trajectory(kind, params, grads, **kw)
  actual = [p for p, _ in trajectory(getattr(ox, kind)(**kw), params, grads)]
  if kind in KERAS_BCOO_IS_NOT_DENSE:
    expected = _keras_dense_where_its_bcoo_path_differs(
        kind, params, grads, expected, kw)
  assert len(actual) == CUBE_STEPS
  # The rank-2 test's tolerance: with decay, EMA overwrites and the loss
  # scale, the dense leaves of both tests differ by up to ~5 ulps (Keras's
  # eager steps against our jitted ones), beyond keras_oracle's 4.
  assert_close(expected, actual)
  ulps = {name: _ulps(expected, actual, name) for name in ("cube", "heads")}
  print(f"{kind}-{option}: largest deviation from Keras, in ulps: {ulps}")
  assert not np.allclose(actual[-1]["cube"][2:], params["cube"][2:])


# Keras's Adafactor divides a BCOO gradient by sqrt(v) at the BCOO's entries
# only (keras's sparse divide), the dense gradient everywhere: where a
# rank-3 table's factored v underflows to 0 (a slab row and a slab column of
# zero gradients: ~1e-30 times ~1e-30) at a zero gradient, the dense step
# makes 0 / 0 = NaN, and its RMS clipping spreads it over the leaf; the BCOO
# step skips it. Ours is the dense gradient's (the default mode's rule:
# Keras's numbers for the dense sum). A rank-2 table's v does not underflow
# (r is normalized by its mean over all rows).
KERAS_BCOO_IS_NOT_DENSE = ("adafactor",)


def _keras_dense_where_its_bcoo_path_differs(kind, params, grads, bcoo, kw):
  """Keras's run on the dense gradients, checked to be its BCOO run up to
  the first step where the dense one has a NaN."""
  dense = keras_bcoo_trajectory(kind, params, dense_of(grads), **kw)
  first_nan = next((t for t, p in enumerate(dense) if not all(
      np.isfinite(x).all() for x in jax.tree.leaves(p))), len(dense))
  assert_close(dense[:first_nan], bcoo[:first_nan])
  print(f"Keras {kind}: BCOO and dense runs agree for {first_nan} steps; "
        "then the dense one has NaNs, ours too")
  return dense


def _ulps(expected, actual, name):
  """The largest |ours - Keras| of leaf ``name`` over the steps, in float32
  ulps of the leaf's largest |value| (at least 1), as keras_oracle counts."""
  worst = 0.0
  for e, a in zip(expected, actual):
    x, y = (np.asarray(jax.tree.leaves(t[name])[0], np.float64)
            for t in (e, a))
    unit = np.spacing(np.float32(max(np.max(np.abs(x[np.isfinite(x)]),
                                            initial=1.0), 1.0)))
    diff = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))
    worst = max(worst, float(np.max(diff)) / float(unit))
  return round(worst, 2)


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("kind", KINDS)
def test_default_mode_rank3_equals_the_dense_sum_with_every_option(kind):
  """With clipping and accumulation too, a rank-3 BCOO gives the dense
  summed gradient's run bit for bit (parameters and state)."""
  params = cube_params(12)
  grads = cube_grad_seq(params, 12, seed=12)
  kw = dict(clipnorm=0.7, weight_decay=0.01, use_ema=True,
            ema_overwrite_frequency=3, gradient_accumulation_steps=2)
  opt = getattr(ox, kind)(**kw)
  sparse_run = trajectory(opt, params, grads)
  dense_run = trajectory(opt, params, dense_of(grads))
  for (p, s), (q, r) in zip(sparse_run, dense_run):
    jax.tree.map(np.testing.assert_array_equal, (p, s), (q, r))


def test_lazy_adamax_rank3_matches_tf_keras_sparse_reference():
  """lazy_rows Adamax on a (ROWS, 2, DIM) table follows tf.keras's sparse
  Adamax (numpy, above) over 30 steps; rows absent at a step keep every bit
  of the table, m and v."""
  table = jnp.asarray(np.random.default_rng(13).normal(size=CUBE),
                      jnp.float32)
  assert_lazy_adamax_follows_tf_keras(table, cube_rows(30, seed=13, nnz=4),
                                      "cube")


def _flat_rows(tree):
  """``tree`` with every (ROWS, 2, DIM) array as (ROWS, 2 * DIM), BCOOs
  too: the rank-2 table of the same rows."""
  def leaf(x):
    if isinstance(x, sparse.BCOO):
      return sparse.BCOO((x.data.reshape(x.data.shape[0], -1), x.indices),
                         shape=(ROWS, SLAB[0] * SLAB[1]))
    if getattr(x, "shape", None) == CUBE:
      return x.reshape(ROWS, -1)
    return x
  return jax.tree.map(leaf, tree,
                      is_leaf=lambda x: isinstance(x, sparse.BCOO))


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("option", sorted(LAZY_OPTIONS))
@pytest.mark.parametrize("kind", LAZY_KINDS)
def test_lazy_rows_rank3_is_the_rank2_rule_on_the_same_rows(kind, option):
  """lazy_rows on a rank-3 table moves it, and every slot, as lazy_rows
  on the (ROWS, 2 * DIM) table of the same rows (the rank-2 semantics,
  tested against tf.keras above: each rule is per element, the base
  options act on the touched rows of a leaf); rows touched by no gradient
  of an accumulation cycle keep every bit of the table and of every slot;
  27 steps."""
  params = cube_params(14)
  params["cube"] = params["cube"].at[0, 0, 0].set(-0.0)
  grads = cube_grad_seq(params, CUBE_STEPS, seed=14)
  kw = _lazy_kwargs(kind, option)
  k = kw.get("gradient_accumulation_steps") or 1
  opt = getattr(ox, kind)(**kw)
  run = trajectory(opt, params, grads)
  flat = trajectory(opt, _flat_rows(params), [_flat_rows(g) for g in grads])
  worst = 0.0
  for t, ((p, s), (q, r)) in enumerate(zip(run, flat)):
    for x, y in zip(jax.tree.leaves(_flat_rows((p, s))),
                    jax.tree.leaves((q, r))):
      np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7,
                                 err_msg=f"step {t}")
      if np.size(x):
        worst = max(worst, float(np.max(np.abs(
            np.asarray(x, np.float64) - np.asarray(y, np.float64)))))
  print(f"{kind}-{option}: rank 3 vs rank 2, largest deviation "
        f"{worst:.2e}")
  prev_p, prev_s = params, opt.init(params)
  for t, (p, s) in enumerate(run):
    cycle = grads[t - t % k: t + 1]
    seen = np.unique(np.concatenate([np.asarray(g["cube"].indices[:, 0])
                                     for g in cycle]))
    untouched = np.setdiff1d(np.arange(ROWS), seen)
    slots = [x for x in jax.tree.leaves(s) if x.shape == CUBE]
    old_slots = [x for x in jax.tree.leaves(prev_s) if x.shape == CUBE]
    # Moments (none for SGD at momentum 0), EMA, accumulator.
    assert len(slots) == len(old_slots) >= (option != "plain") + (
        kind != "sgd")
    for old, new in zip([prev_p["cube"]] + old_slots, [p["cube"]] + slots):
      np.testing.assert_array_equal(
          np.asarray(new)[untouched].view(np.uint32),
          np.asarray(old)[untouched].view(np.uint32), err_msg=f"step {t}")
    prev_p, prev_s = p, s
  assert np.signbit(run[-1][0]["cube"][0, 0, 0])
  assert np.abs(run[-1][0]["cube"][2:] - params["cube"][2:]).max() > 1e-3


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("kind", LAZY_KINDS)
def test_lazy_rows_rank3_touching_every_row_is_the_dense_rule(kind):
  """A rank-3 BCOO touching every row (shuffled) moves the table as the
  dense rule does, with every base option."""
  params = cube_params(15)
  grads = cube_grad_seq(params, 12, seed=15, all_rows=True)
  kw = _lazy_kwargs(kind, "everything")
  lazy = trajectory(getattr(ox, kind)(**kw), params, grads)
  dense = trajectory(getattr(ox, kind)(**dict(kw, lazy_rows=False)), params,
                     dense_of(grads))
  for (p, _), (q, _) in zip(lazy, dense):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=1e-6, atol=1e-7), p, q)


def _bad_cube(kind):
  cube = jnp.zeros(CUBE).at[3, 1, 2].set(1.0).at[5, 0, 1].set(2.0)
  if kind == "element_sparse":  # Indices over axes 0 and 1.
    return sparse.BCOO.fromdense(cube, n_dense=1)
  if kind == "element_sparse_all_axes":
    return sparse.BCOO.fromdense(cube)
  return sparse.BCOO.fromdense(jnp.stack([cube, cube]), n_batch=1,
                               n_dense=2)


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("bad", ["element_sparse", "element_sparse_all_axes",
                                 "batched"])
def test_element_sparse_rank3_bcoo_is_refused_naming_the_leaf(bad, lazy):
  """A rank-3 BCOO whose indices run over more than axis 0 (or a batched
  one) is not row-sparse: a ValueError naming the leaf and the layout."""
  g = _bad_cube(bad)
  words = {"element_sparse": "n_sparse=2", "element_sparse_all_axes":
           "n_sparse=3", "batched": "n_batch=1"}[bad]
  params = {"layer": {"cube": jnp.zeros(CUBE)}}
  if bad == "batched":
    params = {"layer": {"cube": jnp.zeros((2,) + CUBE)}}
  opt = ox.adam(lazy_rows=lazy)
  state = opt.init(params)
  with pytest.raises(ValueError, match=words) as info:
    opt.update({"layer": {"cube": g}}, state, params)
  assert "['layer']['cube']" in str(info.value)
  assert "whole rows along axis 0" in str(info.value)


def test_accumulate_rows_names_a_row_sparse_leaf_it_cannot_mark():
  """A row-sparse gradient of a 1-D leaf (no rows to mark) is a ValueError
  naming the leaf and the BCOO, not a bare message."""
  tx = ox.accumulate_rows(ox.lazy_rows(optax.sgd(1.0)), 2)
  params = {"v": jnp.zeros(3), "t": jnp.zeros((3, 2))}
  state = tx.init(params)
  grads = {"v": sparse.BCOO((jnp.ones(1), jnp.array([[1]])), shape=(3,)),
           "t": jnp.ones((3, 2))}
  with pytest.raises(ValueError, match=r"at \['v'\] needs a float parameter "
                     r"of rank >= 2.*shape \(3,\)"):
    tx.update(grads, state)
