"""The optimizers on 8 devices: shardings kept, numbers unchanged.

JAX fixes its device count when it is first imported, and other test modules
import it first in the same pytest process, so the checks run in a child
Python with `XLA_FLAGS=--xla_force_host_platform_device_count=8` and report
JSON, on which the tests assert. The child builds a 2x4 mesh with automatic
axes (the case where a jitted `init` can lose shardings) and puts parameters
on it with `NamedSharding` in several layouts.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from catalog import KINDS
from helpers import run_child
from helpers import run_explicit_cases

# Every test here runs 8-device child processes or reads their results.
pytestmark = pytest.mark.slow

OPTIMIZERS = KINDS
EVERYTHING_ON = dict(use_ema=True, ema_overwrite_frequency=3,
                     gradient_accumulation_steps=2, global_clipnorm=1.0,
                     weight_decay=0.01)

CHILD = textwrap.dedent("""
    import json, re, sys
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import optax_suite as ox

    names, options, steps = json.loads(sys.argv[1])
    assert len(jax.devices()) == 8, jax.devices()
    mesh = jax.make_mesh((2, 4), ("x", "y"), axis_types=(AxisType.Auto,) * 2)
    specs = {"dense": {"kernel": P("x", "y"), "bias": P("y")},
             "embed": P(None, "y"), "norm": P("x"), "scale": P()}
    shapes = {"dense": {"kernel": (16, 32), "bias": (32,)},
              "embed": (12, 8), "norm": (6,), "scale": ()}
    is_shape = lambda s: isinstance(s, tuple)
    rng = np.random.default_rng(0)
    host = jax.tree.map(
        lambda s: rng.standard_normal(s).astype(np.float32), shapes,
        is_leaf=is_shape)
    shardings = jax.tree.map(lambda s: NamedSharding(mesh, s), specs)
    params = jax.device_put(host, shardings)
    grad_seq = [jax.tree.map(lambda h: (rng.standard_normal(h.shape) * 3)
                             .astype(np.float32), host) for _ in range(steps)]
    by_path = {jax.tree_util.keystr(k): p
               for k, p in jax.tree_util.tree_flatten_with_path(params)[0]}

    def mismatches(tree):
        # Every leaf under a parameter's key path must have the parameter's
        # sharding; other scalars (step counts) must be whole on each device
        # (replicated, or one uncommitted device eagerly).
        bad = []
        for k, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            path = jax.tree_util.keystr(k)
            owner = [p for q, p in by_path.items() if path.endswith(q)]
            if owner and owner[0].shape == leaf.shape:
                want = owner[0].sharding
            elif owner and (".r[" in path or ".c[" in path) and (
                    leaf.ndim == owner[0].ndim - 1):
                # Adafactor's row (r) and column (c) statistics: laid out
                # like the parameter without the axis they average over.
                spec = list(owner[0].sharding.spec)
                spec += [None] * (owner[0].ndim - len(spec))
                del spec[-1 if ".r[" in path else -2]
                want = NamedSharding(mesh, P(*spec))
            elif leaf.ndim == 0:
                if not leaf.sharding.is_fully_replicated:
                    bad.append(f"{path}: {leaf.sharding} is split")
                continue
            else:
                bad.append(path + ": no parameter of this shape")
                continue
            if not leaf.sharding.is_equivalent_to(want, leaf.ndim):
                bad.append(f"{path}: {leaf.sharding} != {want}")
        return bad

    out = {}
    for name in names:
        opt = getattr(ox, name)(learning_rate=0.05, **options)

        def step(params, state, grads):
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        eager_state = opt.init(params)
        jit_state = jax.jit(opt.init)(params)
        step_jit = jax.jit(step)
        compiled = step_jit.lower(params, jit_state, grad_seq[0]).compile()
        hlo = compiled.as_text()
        p, s = params, jit_state
        step_bad = []
        for g in grad_seq:
            p, s = step_jit(p, s, jax.device_put(g, shardings))
            step_bad += mismatches({"params": p, "state": s})
        # The same steps on one device, from host copies.
        one = jax.devices()[0]
        p1 = jax.device_put(host, one)
        s1 = opt.init(p1)
        step_one = jax.jit(step)  # Compiled once for the one-device run.
        for g in grad_seq:
            p1, s1 = step_one(p1, s1, jax.device_put(g, one))
        f64 = lambda x: np.asarray(x, np.float64)  # bool leaves too.
        dev = lambda a, b: max(
            float(np.max(np.abs(f64(x) - f64(y)), initial=0))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
        out[name] = {
            "eager_init": mismatches(eager_state),
            "jit_init": mismatches(jit_state),
            "step": sorted(set(step_bad)),
            "params_vs_one_device": dev(p, p1),
            "state_vs_one_device": dev(s, s1),
            "all_gathers": [l.strip()[:200] for l in hlo.splitlines()
                            if "all-gather" in l],
            "all_reduces": sum("all-reduce" in l for l in hlo.splitlines()),
            "gathered_shapes": sorted(set(re.findall(
                r"= [a-z0-9]+[[]([0-9,]*)[]][{][0-9,]*[}] all-gather[(]",
                hlo))),
        }

    g = jax.device_put(grad_seq[0], shardings)
    ref = np.sqrt(sum(np.sum(np.square(x.astype(np.float64)))
                      for x in jax.tree.leaves(grad_seq[0])))
    out["global_norm"] = {"sharded": float(jax.jit(ox.global_norm)(g)),
                          "float64": float(ref)}
    # Control: our own state with every leaf put whole on each device
    # (replicated), which the check must flag.
    replicated = NamedSharding(mesh, P())
    out["replicated_state"] = mismatches(jax.tree.map(
        lambda x: jax.device_put(x, replicated), jit_state))
    print("JSON" + json.dumps(out))
""")


@pytest.fixture(scope="module")
def sharded():
  stdout = run_child(["-c", CHILD, json.dumps(
      [list(OPTIMIZERS), EVERYTHING_ON, 6])])
  line = [l for l in stdout.splitlines() if l.startswith("JSON")][-1]
  return json.loads(line[4:])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_init_gives_each_slot_its_parameter_sharding(sharded, name):
  """Eager and jitted `init`: every slot, accumulator and EMA leaf is laid
  out like its parameter on the 2-D mesh (Adafactor's row and column
  statistics like the parameter without the axis they average over)."""
  assert sharded[name]["eager_init"] == []
  assert sharded[name]["jit_init"] == []


def test_the_check_catches_misplaced_slots(sharded):
  """The same check flags our own state moved to a replicated layout (every
  slot, accumulator and EMA leaf of a split parameter), so the checks above
  can fail. (optax's own `init` is not asserted on: its layout is optax's.)"""
  flagged = sharded["replicated_state"]
  assert flagged and all("!=" in line for line in flagged), flagged


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_jitted_step_keeps_every_sharding(sharded, name):
  """Six jitted steps (micro-steps, updates, EMA overwrite) keep parameters
  and state where they were."""
  assert sharded[name]["step"] == []


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_sharded_run_equals_one_device_run(sharded, name):
  """Same parameters and state as the unsharded run, up to the rounding of
  the global norm's sum taken in a different order across shards."""
  assert sharded[name]["params_vs_one_device"] <= 1e-6
  assert sharded[name]["state_vs_one_device"] <= 1e-5


# Muon's Newton-Schulz multiplies whole matrices (X X^T, then by X), which
# no element-wise layout can do shard-locally. Measured on the 2x4 mesh: the
# 16x32 kernel sharded on both axes is never gathered whole (XLA gathers
# 16x8 / 8x16 panels, a quarter of it, and the 8x8 Gram blocks, inside the
# iteration), but the 12x8 "embed" matrix, sharded on one axis only, is
# gathered whole (12x8) on every device for the products.
NEWTON_SCHULZ = {"muon": {"never_whole": "16,32", "whole": "12,8"}}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_moves_no_parameter_between_devices(sharded, name):
  """The compiled step has no all-gather: every update stays on the shard
  that owns it; only scalars (the global norm) are all-reduced. Muon's
  Newton-Schulz is the exception, measured and pinned here."""
  if name in NEWTON_SCHULZ:
    shapes = sharded[name]["gathered_shapes"]
    expected = NEWTON_SCHULZ[name]
    assert expected["never_whole"] not in shapes
    assert "32,16" not in shapes
    assert expected["whole"] in shapes  # Documented in muon's docstring.
    assert all(int(np.prod([int(d) for d in s.split(",")])) <= 16 * 8
               for s in shapes), shapes
  else:
    assert sharded[name]["all_gathers"] == []
  assert sharded[name]["all_reduces"] >= 1  # The global norm does reduce.


def test_global_norm_across_shards(sharded):
  """`global_norm` of sharded gradients equals the float64 norm of the whole
  tree."""
  norm = sharded["global_norm"]
  assert abs(norm["sharded"] - norm["float64"]) <= 1e-6 * norm["float64"]


def test_data_parallel_shard_map_example_runs():
  """The shard_map + pmean example trains and matches one device."""
  stdout = run_child(["examples/data_parallel_shard_map.py", "6"])
  summary = json.loads(stdout.strip().splitlines()[-1])
  assert summary["devices"] == 8
  assert summary["last_loss"] < summary["first_loss"]
  assert summary["max_deviation_vs_one_device"] <= 1e-5


def test_loss_scale_optimizer_on_an_explicitly_sharded_mesh():
  """Issue 9 item 14: the skipped-step branch of `loss_scale_optimizer`
  builds its zero updates with the parameters' sharding, so the `cond` type
  checks under `AxisType.Explicit` (float32 and float16), and states and
  updates keep their sharded types eagerly and jitted."""
  cases = [[name, {}, "loss_scale", dtype] for name in OPTIMIZERS
           for dtype in ("float32", "float16")]
  for result in run_explicit_cases(cases):
    assert "error" not in result, result
    assert result["bad"] == [], result
    assert "8@x" in result["updates"], result
