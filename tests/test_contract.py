"""optax's own contract tests, run on every optimizer of the catalog.

optax 0.2.8 ships the tests it runs on its optimizers (in the wheel:
``optax/_src/alias_test.py``, ``optax/_src/sharding_test.py``,
``optax/_src/float64_test.py``, ``optax/contrib/_common_test.py``). The cases
below are those tests' contract, adopted for every entry of
``tests/catalog.py`` (a new optimizer is covered by its entry alone) in
several configurations each (``CONFIGS``). Adopted, by optax's name:

- ``test_init_with_abstract_input`` (sharding_test): ``init`` on a
  ``jax.ShapeDtypeStruct``;
- ``test_optimization``'s ``map_params`` and no-recompile checks, and
  ``jit``/eager agreement of ``init`` and ``update`` (values and state
  structure);
- ``test_optimizers_accept_extra_args``;
- ``test_optimizers_can_be_wrapped_in_inject_hyperparams`` (same updates
  and state through ``ox.inject_hyperparams``);
- ``test_preserve_dtype`` and ``test_state_shape_dtype_shard_stability``
  (updates in the gradients' dtype, state types stable through a
  ``lax.cond``), in bfloat16, float16 and float32;
- ``test_gradient_accumulation`` (``optax.MultiSteps``: zero updates on a
  micro-step);
- ``test_mixed_dtype_input_outputs`` (float64_test) under
  ``jax_enable_x64``, in a child process;
- ``test_state_sharding_type_init_match_update`` and
  ``test_state_sharding_type_preserved_with_jit`` (sharding_test) on an
  explicitly sharded 8-device mesh, and the automatic-mesh shardings of
  ``tests/test_sharding.py``, in child processes.

Not adopted: ``test_optimization``'s 10000-step convergence on the
Rosenbrock function (the Keras parity tests pin the numbers instead), the
complex-dtype cases (complex parameters are refused at ``init``, see
``test_bad_input``), ``test_explicit_dtype`` (optax's ``mu_dtype`` argument
is not in Keras's signatures), and the L-BFGS and microbatching tests.
Our own additions: integer, ``None`` and empty leaves, and composition in
``optax.chain``/``masked``/``multi_transform``/``MultiSteps``.
"""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_suite as ox
from catalog import KINDS
from helpers import run_child
from helpers import run_explicit_cases

# name -> (factory options, wrapper). Wrapper: None, "loss_scale" (inside
# ox.loss_scale_optimizer) or "inject" (ox.inject_hyperparams).
CONFIGS = {
    "plain": ({}, None),
    "ema-overwrite": (dict(use_ema=True, ema_overwrite_frequency=2), None),
    "accumulation": (dict(gradient_accumulation_steps=2), None),
    "clip-wd": (dict(clipnorm=1.0, weight_decay=0.01), None),
    "loss-scale": ({}, "loss_scale"),
    "inject": (dict(use_ema=True, ema_overwrite_frequency=2), "inject"),
}
CASES = [(kind, config) for kind in KINDS for config in CONFIGS]
IDS = [f"{kind}-{config}" for kind, config in CASES]
LEARNING_RATE = 0.1


def make(kind, config):
  options, wrapper = CONFIGS[config]
  factory = getattr(ox, kind)
  if wrapper == "inject":
    factory = ox.inject_hyperparams(factory)
  opt = factory(learning_rate=LEARNING_RATE, **options)
  if wrapper == "loss_scale":
    opt = ox.loss_scale_optimizer(opt, initial_scale=2.0**4)
  return opt


def contract_params():
  """Every kind of leaf at once, so that one compilation checks them all:
  float32, bfloat16 and float16 leaves, an integer, a None and an empty
  leaf."""
  return {"f32": jnp.array([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]]),
          "bf16": jnp.array([-0.5, 1.5, 2.0], jnp.bfloat16),
          "f16": jnp.array([0.75, -1.25], jnp.float16),
          "int": jnp.asarray(5, jnp.int32), "none": None,
          "empty": jnp.zeros((0, 2))}


def contract_grads(params, step):
  def leaf(p):
    if not jnp.issubdtype(p.dtype, jnp.floating):
      return jnp.zeros_like(p)
    wave = jnp.cos(jnp.arange(p.size, dtype=jnp.float32) + step) * 2.0
    return wave.reshape(p.shape).astype(p.dtype)
  return jax.tree.map(leaf, params)


def types(tree):
  return jax.tree.map(lambda x: (x.shape, jnp.dtype(x.dtype)), tree)


def tolerance(x):
  """Differently fused float32 ops differ by a few ulps per step; low
  precision leaves by one rounding of their own dtype."""
  eps = float(jnp.finfo(x.dtype).eps) if jnp.issubdtype(
      x.dtype, jnp.floating) else 0.0
  return dict(rtol=max(4 * eps, 1e-6), atol=max(4 * eps, 1e-6))


def assert_close(a, b):
  def leaf(x, y):
    np.testing.assert_allclose(np.asarray(x, np.float64),
                               np.asarray(y, np.float64), **tolerance(x))
  jax.tree.map(leaf, a, b)


def _run(check, results, name, fn):
  try:
    fn()
    results[name] = None
  except Exception as e:  # Reported by the test named after the check.
    results[name] = e


@functools.lru_cache(maxsize=None)
def contract_results(kind, config):
  """Runs every adopted case on one optimizer configuration and records
  each check's failure (or None): one compilation of each function serves
  several of optax's cases, which keeps the module fast."""
  opt = make(kind, config)
  params = contract_params()
  results = {}

  def abstract_input():
    abstract = jax.ShapeDtypeStruct(shape=(2, 4, 8), dtype=jnp.float32)
    state = opt.init(abstract)
    # The state a concrete array of that shape and dtype gets, leaf by leaf.
    concrete = opt.init(jnp.zeros(abstract.shape, abstract.dtype))
    assert jax.tree.structure(state) == jax.tree.structure(concrete)
    assert types(state) == types(concrete)
    assert types(state) == types(jax.eval_shape(opt.init, abstract))

  @jax.jit
  def step(params, state, grads):
    # A lax.cond between the update and the old state only type-checks when
    # both agree on every state leaf and the updates on the gradients' types
    # (optax's test_state_shape_dtype_shard_stability).
    flip = jax.random.randint(jax.random.key(0), (), 0, 2) < 5
    updates, state = jax.lax.cond(
        flip, lambda: opt.update(
            grads, state, params,
            unexpected_extra_args_your_optimizer_doesnt_expect=1),
        lambda: (grads, state))
    return optax.apply_updates(params, updates), state, updates

  def jit_and_eager():
    eager, jitted = opt.init(params), jax.jit(opt.init)(params)
    assert jax.tree.structure(eager) == jax.tree.structure(jitted)
    assert types(eager) == types(jitted)
    eager = optax.tree.map_params(opt, lambda v: v, eager)
    # One eager step (op by op, the slow part) against the jitted one, then
    # a second jitted step whose state must keep the same types.
    g = contract_grads(params, 0)
    u_e, eager = opt.update(g, eager, params)
    p_j, jitted, u_j = step(params, jitted, g)
    p_e = optax.apply_updates(params, u_e)
    for tree in (u_e, u_j):
      assert types(tree) == types(g), (tree, g)
    assert jax.tree.structure(eager) == jax.tree.structure(jitted)
    assert types(eager) == types(jitted)
    assert int(u_j["int"]) == 0 and u_j["none"] is None
    assert_close(p_e, p_j)
    assert_close(eager, jitted)
    before = step._cache_size()
    g = contract_grads(params, 1)
    p_j, second, _ = step(p_j, jitted, g)
    assert step._cache_size() == before, "the second step recompiled"
    assert jax.tree.structure(second) == jax.tree.structure(eager)
    assert types(second) == types(eager)
    # ... and the numbers of a second eager step.
    u_e, eager = opt.update(g, eager, p_e)
    assert_close(optax.apply_updates(p_e, u_e), p_j)
    assert_close(eager, second)

  def inject_equal():
    options, wrapper = CONFIGS[config]
    if wrapper is not None:
      return
    injected = ox.inject_hyperparams(getattr(ox, kind))(
        learning_rate=LEARNING_RATE, **options)
    g = contract_grads(params, 0)
    updates, state = jax.jit(opt.update)(g, opt.init(params), params)
    updates_i, state_i = jax.jit(injected.update)(g, injected.init(params),
                                                  params)
    # optax's tolerances: injected hyperparameters are float32 arrays, so
    # e.g. `1 - beta_2` rounds differently from the Python float's.
    def close(x, y):
      if y is None:  # A momentum slot kept for an injected momentum only
        return       # (issue 9 item 12); a plain 0 keeps none, as Keras.
      np.testing.assert_allclose(
          np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=1e-3,
          atol=1e-6)

    for a, b in ((updates_i, updates), (state_i.inner_state, state)):
      # Over the plain run's structure: its None (no slot) meets a subtree.
      jax.tree.map(lambda y, x: close(x, y), b, a,
                   is_leaf=lambda v: v is None)

  def combinators():
    labels = {k: "ours" if k != "f32" else "sgd" for k in params}
    combined = {
        "chain": optax.chain(ox.clip_by_global_norm(10.0), opt),
        "masked": optax.masked(opt, {k: k != "f16" for k in params}),
        "multi_transform": optax.multi_transform(
            {"ours": opt, "sgd": optax.sgd(0.1)}, labels),
        "multisteps": optax.MultiSteps(opt, every_k_schedule=2),
    }
    states = {name: tx.init(params) for name, tx in combined.items()}

    @jax.jit
    def run(params, states):
      out = {}
      for name, tx in combined.items():
        p, s, first = params, states[name], None
        for t in range(2):
          g = contract_grads(params, t)
          u, s = tx.update(g, s, p)
          assert types(u) == types(g), name
          first = u if first is None else first
          p = optax.apply_updates(p, u)
        out[name] = (p, first)
      return out

    out = run(params, states)
    for name, (p, _) in out.items():
      assert types(p) == types(params), name
    g0, g1 = contract_grads(params, 0), contract_grads(params, 1)

    @jax.jit
    def alone(params):
      """Two steps of the optimizer alone, and one on the mean gradient."""
      p, s = params, opt.init(params)
      for g in (g0, g1):
        u, s = opt.update(g, s, p)
        p = optax.apply_updates(p, u)
      # optax.MultiSteps's running mean: g0 + (g1 - g0) / 2.
      mean = jax.tree.map(lambda a, b: a + (b - a) / 2, g0, g1)
      u, _ = opt.update(mean, opt.init(params), params)
      return p, optax.apply_updates(params, u)

    two_steps, mean_step = alone(params)
    # The gradients' global norm is below the clip's 10: the chain is the
    # optimizer alone.
    assert float(optax.global_norm(g0)) < 10 and float(
        optax.global_norm(g1)) < 10
    assert_close(out["chain"][0], two_steps)
    # The optimizer's leaves are its own business (every rule and option
    # here is per leaf): each wrapper leaves them as the optimizer alone
    # does, and hands the others on.
    two_updates = lambda p, u0, u1: optax.apply_updates(optax.apply_updates(p, u0),
                                                u1)
    masked = out["masked"][0]
    assert_close({k: v for k, v in masked.items() if k != "f16"},
                 {k: v for k, v in two_steps.items() if k != "f16"})
    # optax.masked passes the masked-out gradients on as the updates.
    np.testing.assert_array_equal(out["masked"][1]["f16"], g0["f16"])
    np.testing.assert_array_equal(masked["f16"],
                                  two_updates(params["f16"], g0["f16"], g1["f16"]))
    multi = out["multi_transform"][0]
    assert_close({k: v for k, v in multi.items() if k != "f32"},
                 {k: v for k, v in two_steps.items() if k != "f32"})
    sgd = optax.sgd(0.1)  # the "sgd" label: plain SGD on the f32 leaf.
    sgd_u0, sgd_state = sgd.update(g0["f32"], sgd.init(params["f32"]))
    sgd_u1, _ = sgd.update(g1["f32"], sgd_state)
    assert_close(multi["f32"], two_updates(params["f32"], sgd_u0, sgd_u1))
    # MultiSteps: a micro-step of zeros, then one step on the mean.
    for leaf in jax.tree.leaves(out["multisteps"][1]):
      assert not bool(jnp.any(leaf))
    assert_close(out["multisteps"][0], mean_step)

  for name, fn in (("abstract_input", abstract_input),
                   ("jit_and_eager", jit_and_eager),
                   ("inject", inject_equal), ("combinators", combinators)):
    _run(name, results, name, fn)
  return results


# Contract cases known to fail on this branch, with the reason; another
# change of issue 9 fixes each. A listed case that passes fails the test, so
# that the entry is removed when the fix lands.
# Cases of optax's contract that fail for us, with the reason; a known
# failure that starts passing fails the test, so the entry gets removed.
# (Issue 9 items 2 and 12 fixed the ones found first: injected
# hyperparameters' dtype and rmsprop's momentum slot.)
KNOWN_FAILURES: dict = {}


def check(kind, config, name, error=None):
  """Raises the check's failure, or xfails a known one (see above)."""
  if error is False:  # Checked by the caller, and passed.
    error = None
  elif error is None:
    error = contract_results(kind, config)[name]
  known = KNOWN_FAILURES.get((kind, config, name))
  if known is not None:
    if error is None:
      pytest.fail(f"Known failure now passes, remove it: {known}")
    pytest.xfail(known)
  if error is not None:
    raise error


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("kind, config", CASES, ids=IDS)
def test_init_with_abstract_input(kind, config):
  """sharding_test's `test_init_with_abstract_input`: `init` on a
  `jax.ShapeDtypeStruct`, with the types `jax.eval_shape(init)` gives."""
  check(kind, config, "abstract_input")


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("kind, config", CASES, ids=IDS)
def test_jit_eager_dtypes_extra_args_and_leaves(kind, config):
  """On float32, bfloat16, float16, integer, None and empty leaves at once:
  `init` and `update` eagerly and jitted give one state structure and
  types and the same numbers (to a few ulps), and so does a second jitted
  step; updates come in the
  gradients' dtypes (`test_preserve_dtype`), through a `lax.cond` with the
  old state (`test_state_shape_dtype_shard_stability`), with an unexpected
  extra argument (`test_optimizers_accept_extra_args`); `map_params` works
  and a second call does not recompile (`test_optimization`); an integer
  leaf gets a zero update and a None leaf stays None."""
  check(kind, config, "jit_and_eager")


UNWRAPPED = [(c, i) for c, i in zip(CASES, IDS) if CONFIGS[c[1]][1] is None]


@pytest.mark.parametrize("kind, config", [c for c, _ in UNWRAPPED],
                         ids=[i for _, i in UNWRAPPED])
@pytest.mark.fast_cases(1)
def test_optimizers_can_be_wrapped_in_inject_hyperparams(kind, config):
  """alias_test's case (configurations without a wrapper): the same updates
  and inner state through `ox.inject_hyperparams`, to optax's rtol."""
  check(kind, config, "inject")


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("kind, config", CASES, ids=IDS)
def test_works_inside_optax_combinators(kind, config):
  """Inside `optax.chain`, `optax.masked`, `optax.multi_transform` and
  `optax.MultiSteps` (`test_gradient_accumulation`: zero updates on a
  micro-step), two jitted steps keep every leaf's type and stay finite."""
  check(kind, config, "combinators")


FLOAT64_CHILD = """
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp, optax
sys.path.insert(0, "tests")
from test_contract import CASES, make
out = {}
params = (jnp.array([1.0, 2.0], jnp.float32), jnp.array([3.0, 4.0], jnp.float64))
grads = (jnp.array([10.0, 21.0], jnp.float32),
         jnp.array([33.0, 42.0], jnp.float64))
dtypes = lambda tree: [str(x.dtype) for x in jax.tree.leaves(tree)]
for kind, config in CASES:
    try:
        opt = make(kind, config)
        state = opt.init(params)
        updates, new_state = opt.update(grads, state, params)
        new_params = optax.apply_updates(params, updates)
        out[f"{kind}-{config}"] = [
            w for w, a, b in (("state", state, new_state),
                              ("params", params, new_params),
                              ("updates", grads, updates))
            if dtypes(a) != dtypes(b)]
    except Exception as e:
        out[f"{kind}-{config}"] = [f"{type(e).__name__}: {str(e)[:300]}"]
print("JSON" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def float64_results():
  stdout = run_child(["-c", FLOAT64_CHILD])
  return json.loads([l for l in stdout.splitlines()
                     if l.startswith("JSON")][-1][4:])


@pytest.mark.slow
@pytest.mark.parametrize("kind, config", CASES, ids=IDS)
def test_mixed_float32_float64_dtypes_under_x64(float64_results, kind,
                                                config):
  """float64_test's `test_mixed_dtype_input_outputs`: with x64 on, a
  float32 and a float64 leaf keep their dtypes in state, updates and
  parameters (a child process, as the flag is global)."""
  assert float64_results[f"{kind}-{config}"] == []


@pytest.fixture(scope="module")
def explicit_results():
  cases = []
  for kind, config in CASES:  # float16 as optax's (float32: test_sharding).
    options, wrapper = CONFIGS[config]
    cases.append([kind, options, wrapper, "float16"])
  results = run_explicit_cases(cases)
  by_case = {}
  for result in results:
    kind, options, wrapper, dtype = result["case"]
    config = [c for c, (o, w) in CONFIGS.items()
              if o == options and w == wrapper][0]
    by_case.setdefault((kind, config), []).append(result)
  return by_case


@pytest.mark.slow
@pytest.mark.parametrize("kind, config", CASES, ids=IDS)
def test_explicit_sharding_types_kept(explicit_results, kind, config):
  """sharding_test's `test_state_sharding_type_init_match_update` and
  `..._preserved_with_jit`: on an `AxisType.Explicit` mesh, init eager and
  jitted and update eager and jitted give one state type (shape, dtype,
  sharding), and updates the gradients' type, in float16 and float32."""
  def assert_types_kept():
    for result in explicit_results[(kind, config)]:
      assert "error" not in result, result
      assert result["bad"] == [], result
  try:
    assert_types_kept()
    error = None
  except AssertionError as e:
    error = e
  check(kind, config, "explicit_sharding", error or False)
