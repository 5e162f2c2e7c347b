"""What a step reads on one call: a jaxpr walked with concrete values.

``reads(step, grads, state, params)`` traces ``step`` to a jaxpr and
evaluates it equation by equation, descending only into the branch of each
``cond`` that the concrete predicate takes. Every parameter leaf and every
non-scalar state leaf outside the gradient accumulator is tagged; a tag
follows a value through ``cond`` and ``jit`` boundaries unchanged, and any
other primitive that takes a tagged value is recorded. It returns those
records and, per parameter leaf, whether the step's output is that very
input buffer (passed through, not recomputed).

On a gradient-accumulation micro-step the fused step of ``ox.apply`` must
record nothing (no rule, no parameter arithmetic) and pass every parameter
through; on the update call it records the rule reading its slots.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_CALLS = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr",
          "core_call": "call_jaxpr", "remat": "jaxpr", "checkpoint": "jaxpr",
          "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
          "custom_vjp_call_jaxpr": "fun_jaxpr"}


def _closed(j):
  return (j.jaxpr, j.consts) if hasattr(j, "consts") else (j, ())


def _run(jaxpr, consts, args, records):
  env = {}

  def read(v):
    if hasattr(v, "val") and not hasattr(v, "count"):  # a Literal
      return v.val, None
    if type(v).__name__ == "Literal":
      return v.val, None
    return env[v]

  for var, c in zip(jaxpr.constvars, consts):
    env[var] = (c, None)
  for var, a in zip(jaxpr.invars, args):
    env[var] = a
  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    if name == "cond":
      index = int(ins[0][0])
      branch, bconsts = _closed(eqn.params["branches"][index])
      outs = _run(branch, bconsts, ins[1:], records)
    elif name in _CALLS and _CALLS[name] in eqn.params:
      sub, sconsts = _closed(eqn.params[_CALLS[name]])
      outs = _run(sub, sconsts, ins, records)
    else:
      for _, tag in ins:
        if tag is not None:
          records.append((name, tag))
      vals = eqn.primitive.bind(*[v for v, _ in ins], **eqn.params)
      if not eqn.primitive.multiple_results:
        vals = [vals]
      outs = [(v, None) for v in vals]
    for var, out in zip(eqn.outvars, outs):
      env[var] = out
  return [read(v) for v in jaxpr.outvars]


def _tagged_state(state):
  """Tags the non-scalar state leaves other than the accumulator's."""
  paths, _ = jax.tree_util.tree_flatten_with_path(state)
  tags = []
  for i, (path, leaf) in enumerate(paths):
    keys = jax.tree_util.keystr(path)
    tags.append(("state", keys) if jnp.ndim(leaf) > 0
                and ".accumulated" not in keys else None)
  return tags


def reads(step, grads, state, params):
  """``(records, passed_through)`` of one call ``step(grads, state, params)``.

  ``records`` lists ``(primitive, tag)`` for each primitive run on a tagged
  value; ``passed_through`` lists, per parameter leaf, whether the output
  parameter is the input one.
  """
  leaves = [jax.tree.leaves(t) for t in (grads, state, params)]
  trees = [jax.tree.structure(t) for t in (grads, state, params)]
  sizes = [len(x) for x in leaves]

  def flat(*xs):
    g, s, p = (jax.tree.unflatten(t, xs[a:a + n]) for t, a, n in zip(
        trees, (0, sizes[0], sizes[0] + sizes[1]), sizes))
    new_params, new_state = step(g, s, p)
    return jax.tree.leaves(new_params) + jax.tree.leaves(new_state)

  closed = jax.make_jaxpr(flat)(*leaves[0], *leaves[1], *leaves[2])
  tags = ([None] * sizes[0] + _tagged_state(state)
          + [("param", i) for i in range(sizes[2])])
  args = list(zip(leaves[0] + leaves[1] + leaves[2], tags))
  records: list = []
  outs = _run(closed.jaxpr, closed.consts, args, records)
  passed = [tag == ("param", i) for i, (_, tag) in enumerate(outs[:sizes[2]])]
  return records, passed


# ----------------------------------------------------------------------------
# The tests: every optimizer of the catalog, at its defaults with
# gradient_accumulation_steps=4, directly and through each wrapper.

import os  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "jax")

import pytest  # noqa: E402

import optax_suite as ox  # noqa: E402
from catalog import CATALOG  # noqa: E402

K = 4

WRAPPERS = {
    "direct": lambda name: getattr(ox, name)(gradient_accumulation_steps=K),
    "loss_scale_optimizer": lambda name: ox.loss_scale_optimizer(
        getattr(ox, name)(gradient_accumulation_steps=K)),
    "multi_optimizer": lambda name: ox.multi_optimizer(ox.OptimizerMap(
        getattr(ox, name)(gradient_accumulation_steps=K),
        {"head/.*": getattr(ox, name)(gradient_accumulation_steps=K)})),
    "inject_hyperparams": lambda name: ox.inject_hyperparams(
        getattr(ox, name))(gradient_accumulation_steps=K),
}


def _tree():
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  params = {"body": {"kernel": jax.random.normal(keys[0], (6, 5)),
                     "bias": jax.random.normal(keys[1], (5,))},
            "head": {"kernel": jax.random.normal(keys[2], (5, 3))}}
  grads = jax.tree.map(lambda p: 0.1 * jnp.cos(3.0 * p + 1.0), params)
  return params, grads


def _step(opt):
  return lambda g, s, p: ox.apply(opt, g, s, p)


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
@pytest.mark.parametrize("name", sorted(CATALOG))
def test_apply_micro_step_runs_no_rule_and_writes_no_parameter(name, wrapper):
  """On calls 1..3 of 4 ``ox.apply`` runs no primitive on a parameter or a
  rule slot (only the accumulator moves) and returns every parameter buffer
  as it came; on call 4 the rule reads its slots and the parameters move.
  (The split path, ``update`` + ``apply_updates``, adds -0.0 to every
  parameter on a micro-step, which this records.)"""
  opt = WRAPPERS[wrapper](name)
  params, grads = _tree()
  state = opt.init(params)
  for call in range(1, K + 1):
    records, passed = reads(_step(opt), grads, state, params)
    if call < K:
      assert records == [], (call, records[:5])
      assert all(passed), (call, passed)
    else:
      assert any(tag[0] == "param" for _, tag in records), records[:5]
      assert not any(passed), passed
    params, state = jax.jit(_step(opt))(grads, state, params)


@pytest.mark.parametrize("name", ["adam", "muon"])
def test_the_check_records_the_split_step(name):
  """The check can fail: the split step's micro-step adds the zero update to
  each parameter, and is recorded doing so."""
  opt = getattr(ox, name)(gradient_accumulation_steps=K)
  params, grads = _tree()

  def split(g, s, p):
    updates, s = opt.update(g, s, p)
    return ox.apply_updates(p, updates, s), s
  records, passed = reads(split, grads, opt.init(params), params)
  assert {"add"} <= {prim for prim, tag in records if tag[0] == "param"}
  assert not any(passed)


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_every_wrapper_is_a_keras_optimizer_that_rebuilds_from_its_config(
    wrapper):
  """Each wrapper's optimizer carries its fields from construction, refuses
  to have them set, and ``factory(**config)`` builds an equal step."""
  opt = WRAPPERS[wrapper]("adam")
  assert isinstance(opt, ox.KerasOptimizer)
  with pytest.raises(AttributeError, match="fused_step"):
    opt.fused_step = None
  params, grads = _tree()
  again = opt.factory(**opt.config)
  state = opt.init(params)
  for _ in range(K):
    a, _ = jax.jit(_step(opt))(grads, state, params)
    b, state = jax.jit(_step(again))(grads, state, params)
    params = b
  chex_equal = jax.tree.map(lambda x, y: bool(jnp.all(x == y)), a, b)
  assert all(jax.tree.leaves(chex_equal))


def _copies(jitted, *args, size):
  compiled = jitted.lower(*args).compile()
  hlo = compiled.as_text()
  assert hlo.count(f"f32[{size}]") > 10  # The probe sees the leaves.
  return hlo.count(f"f32[{size}]{{0}} copy("), compiled


@pytest.mark.fast_cases(3)
@pytest.mark.parametrize("kind", ["adam", "muon", "sgd"])
@pytest.mark.parametrize("extra", [{}, {"gradient_accumulation_steps": 4},
                                   {"use_ema": True}])
def test_the_pair_form_jitted_as_documented_copies_no_parameter(kind, extra):
  """``jax.jit(functools.partial(ox.apply, opt), donate_argnums=1)`` on
  ``(params, state)`` (docs/guides/accumulation.md's and the docstring's form) aliases each
  donated buffer with its own output: the compiled step copies no
  parameter-sized buffer and gives the numbers of the earlier form. The
  earlier form jitted the same way (``donate_argnums=(1, 2)`` on ``state,
  params``) pairs parameters with slots, and XLA copies them."""
  import functools
  size = 4099  # A size no other buffer of the step has.
  params = {f"p{i}": jnp.full((size,), 0.5 + i) for i in range(4)}
  grads = jax.tree.map(lambda p: jnp.cos(p) * 0.1, params)
  opt = getattr(ox, kind)(**extra)
  state = opt.init(params)
  pair = jax.jit(functools.partial(ox.apply, opt), donate_argnums=1)
  copies, _ = _copies(pair, grads, (params, state), size=size)
  assert copies == 0
  legacy = jax.jit(functools.partial(ox.apply, opt), donate_argnums=(1, 2))
  legacy_copies, _ = _copies(legacy, grads, state, params, size=size)
  if any(jnp.shape(x) == (size,) for x in jax.tree.leaves(state)):
    assert legacy_copies > 0  # Slots of a parameter's shape: mispaired.
  print(f"{kind} {extra}: copies {legacy_copies} -> {copies}")
  want = jax.jit(lambda g, s, p: ox.apply(opt, g, s, p))(grads, state, params)
  got = pair(grads, (params, state))
  same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), want, got)
  assert all(jax.tree.leaves(same))


def test_the_pair_form_refuses_anything_but_a_pair():
  opt = ox.adam()
  params = {"w": jnp.ones(2)}
  with pytest.raises(ValueError, match="params_and_state"):
    ox.apply(opt, params, opt.init(params))
