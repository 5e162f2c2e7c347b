"""Checkpointing optimizer states with orbax, and migrating them.

A state is restored into a target built without real data,
`jax.eval_shape(opt.init, params)`, as users do. The round trip must give back
every array bit for bit, and training continued from the restored state must
be bitwise the training that never stopped. After a user turns on EMA or
gradient accumulation, `migrate_state` must carry the restored slots over so
that training continues exactly where it left off.

A state checkpointed by 0.2.0 must restore with today's code and continue
(issue 17): tests/data/checkpoint_0_2_0/ was written by 0.2.0's code, with
tests/data/make_checkpoint_0_2_0.py, whose optimizers, parameters and
gradients the tests below import.
"""

import functools
import importlib.util
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import optax_suite as ox
import keras_oracle

STEPS = 30  # before the checkpoint, and again after it


@functools.lru_cache(maxsize=None)
def make_step(opt):
  @jax.jit
  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return step


def run(opt, params, state, grads_seq):
  step = make_step(opt)
  trajectory = []
  for grads in grads_seq:
    params, state = step(params, state, grads)
    trajectory.append(params)
  return params, state, trajectory


def save_and_restore(path, tree, target):
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(path, tree)
    ckpt.wait_until_finished()
  with ocp.StandardCheckpointer() as ckpt:
    return ckpt.restore(path, target)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x, y)


OPTIMIZERS = {
    "adam_everything": lambda: ox.adam(
        0.01, amsgrad=True, weight_decay=0.01, global_clipnorm=1.0,
        use_ema=True, ema_overwrite_frequency=7,
        gradient_accumulation_steps=3),
    "adamax_ema": lambda: ox.adamax(0.01, use_ema=True, clipnorm=1.0),
    "rmsprop_momentum": lambda: ox.rmsprop(
        0.01, momentum=0.9, centered=True, loss_scale_factor=8.0),
    "adadelta": lambda: ox.adadelta(1.0, clipvalue=0.5),
}


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_round_trip_and_continued_training_are_bitwise_equal(name, tmp_path):
  opt = OPTIMIZERS[name]()
  params = keras_oracle.make_params(0)
  grads = keras_oracle.varied_grads(params, 2 * STEPS, seed=1)
  params, state, _ = run(opt, params, opt.init(params), grads[:STEPS])

  target = {"params": jax.eval_shape(lambda: params),
            "opt_state": jax.eval_shape(opt.init, params)}
  restored = save_and_restore(
      tmp_path / "ckpt", {"params": params, "opt_state": state}, target)
  assert_trees_equal(restored["params"], params)
  assert_trees_equal(restored["opt_state"], state)
  assert isinstance(restored["opt_state"], ox.KerasOptimizerState)

  _, _, uninterrupted = run(opt, params, state, grads[STEPS:])
  _, _, resumed = run(opt, restored["params"], restored["opt_state"],
                      grads[STEPS:])
  for a, b in zip(uninterrupted, resumed):
    assert_trees_equal(a, b)


def test_restore_then_turn_on_ema_continues_the_same_training(tmp_path):
  """Old slots carry over; the new EMA starts from the restored weights."""
  params = keras_oracle.make_params(0)
  grads = keras_oracle.varied_grads(params, 2 * STEPS, seed=2)
  old_opt = ox.adamax(0.01, weight_decay=0.01, global_clipnorm=2.0)
  params, state, _ = run(old_opt, params, old_opt.init(params),
                         grads[:STEPS])
  restored = save_and_restore(tmp_path / "ckpt", state,
                              jax.eval_shape(old_opt.init, params))

  momentum = 0.9
  new_opt = ox.adamax(0.01, weight_decay=0.01, global_clipnorm=2.0,
                      use_ema=True, ema_momentum=momentum)
  migrated = ox.migrate_state(restored, new_opt, params)
  assert jax.tree.structure(migrated) == jax.tree.structure(
      new_opt.init(params))
  assert_trees_equal(migrated.inner, state.inner)
  assert int(migrated.count) == STEPS

  # EMA without overwrite leaves the parameters alone, so the trajectory must
  # be exactly the old optimizer's, which proves the slots carried over.
  _, _, expected = run(old_opt, params, state, grads[STEPS:])
  final, new_state, got = run(new_opt, params, migrated, grads[STEPS:])
  for a, b in zip(expected, got):
    assert_trees_equal(a, b)
  # And the EMA is the average of that trajectory, from its first point.
  average = got[0]
  for p in got[1:]:
    average = jax.tree.map(lambda a, w: momentum * a + (1 - momentum) * w,
                           average, p)
  for a, b in zip(jax.tree.leaves(ox.finalize_variable_values(final,
                                                              new_state)),
                  jax.tree.leaves(average)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_restore_then_turn_on_accumulation_updates_with_the_mean():
  """The old Adam slots go inside the new AccumulationState."""
  params = keras_oracle.make_params(0)
  grads = keras_oracle.varied_grads(params, STEPS + 2, seed=3)
  old_opt = ox.adam(0.01, use_ema=True)
  params, state, _ = run(old_opt, params, old_opt.init(params),
                         grads[:STEPS])
  k = 2
  new_opt = ox.adam(0.01, use_ema=True, gradient_accumulation_steps=k)
  migrated = ox.migrate_state(state, new_opt, params)
  assert isinstance(migrated.inner, ox.AccumulationState)
  assert_trees_equal(migrated.inner.inner_state, state.inner)
  assert_trees_equal(migrated.ema, state.ema)

  # Two micro-steps with the new optimizer = one old step on their mean
  # (weights only; the EMA counts calls, so it differs by design).
  pair = grads[STEPS:STEPS + k]
  mean = jax.tree.map(lambda a, b: (a + b) / k, *pair)
  _, _, (expected,) = run(old_opt, params, state, [mean])
  _, _, got = run(new_opt, params, migrated, pair)
  assert_trees_equal(got[0], params)  # the micro-step does not move
  for a, b in zip(jax.tree.leaves(got[1]), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_migrate_back_without_accumulation_keeps_the_inner_slots():
  params = keras_oracle.make_params(0)
  grads = keras_oracle.varied_grads(params, 6, seed=4)
  acc_opt = ox.rmsprop(0.01, momentum=0.5, gradient_accumulation_steps=2)
  _, state, _ = run(acc_opt, params, acc_opt.init(params), grads)
  plain = ox.rmsprop(0.01, momentum=0.5)
  migrated = ox.migrate_state(state, plain, params)
  assert_trees_equal(migrated.inner, state.inner.inner_state)


def test_state_that_matches_nothing_comes_back_fresh():
  params = {"w": jnp.ones(3)}
  adam_state = ox.adam(0.1).init(params)
  rms = ox.rmsprop(0.1, momentum=0.9)
  migrated = ox.migrate_state(adam_state, rms, params)
  assert_trees_equal(migrated, rms.init(params))


def _filled(opt, params, calls):
  state = opt.init(params)
  for i in range(calls):
    g = jax.tree.map(lambda p, i=i: jnp.full_like(p, 0.5 + i), params)
    _, state = opt.update(g, state, params)
  return state


def test_tuple_params_as_long_as_the_chain_keep_their_slots():
  """Issue 9 item 6: with a 3-tuple of parameters (the chain's length),
  turning on accumulation used to pour the chain's states into the
  accumulator field; matching by type and field name puts them in the
  wrapper's `inner_state` and starts the accumulator empty."""
  params = (jnp.ones(2), jnp.full(3, 2.0), jnp.full(1, 3.0))
  state = _filled(ox.adam(0.1), params, 3)
  new = ox.adam(0.1, gradient_accumulation_steps=2)
  migrated = ox.migrate_state(state, new, params)
  assert_trees_equal(migrated.inner.inner_state, state.inner)
  assert_trees_equal(migrated.inner.accumulated,
                     jax.tree.map(jnp.zeros_like, params))
  assert int(migrated.count) == 3


def test_a_transformation_inserted_before_ours_keeps_its_slots():
  """A chain state is matched by type: `optax.chain(ox.adam())` restored
  into `optax.chain(optax.clip(1.0), ox.adam())` keeps the Adam state."""
  params = {"w": jnp.ones(2)}
  state = _filled(optax.chain(ox.adam(0.1)), params, 2)
  new = optax.chain(optax.add_noise(0.0, 0.5, 0), ox.adam(0.1))
  migrated = ox.migrate_state(state, new, params)
  assert_trees_equal(migrated[1], state[0])


def test_a_half_filled_accumulator_is_not_dropped_silently():
  """Turning accumulation off after a micro-step would lose its gradients:
  a ValueError says so; right after an update step it migrates."""
  params = {"w": jnp.ones(2)}
  acc = ox.adam(0.1, gradient_accumulation_steps=2)
  with pytest.raises(ValueError, match=r"accumulated.*micro-steps"):
    ox.migrate_state(_filled(acc, params, 3), ox.adam(0.1), params)
  state = _filled(acc, params, 4)
  migrated = ox.migrate_state(state, ox.adam(0.1), params)
  assert_trees_equal(migrated.inner, state.inner.inner_state)


def test_changed_parameter_shapes_are_refused():
  params = {"w": jnp.ones(2)}
  state = _filled(ox.adam(0.1), params, 1)
  with pytest.raises(ValueError, match=r"cannot carry `state\.inner\[1\]\.mu"):
    ox.migrate_state(state, ox.adam(0.1), {"w": jnp.ones(3)})


def _import_writer():
  path = pathlib.Path(__file__).resolve().parent / "data" / (
      "make_checkpoint_0_2_0.py")
  spec = importlib.util.spec_from_file_location("make_checkpoint_0_2_0", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


WRITER = _import_writer()  # the script that wrote the 0.2.0 checkpoints
CONTINUED = 5  # steps after the restore


def restore_0_2_0(name, opt, params):
  """0.2.0's checkpoint `name`, restored into today's `opt.init(params)`."""
  target = {"params": params, "opt_state": opt.init(params)}
  with ocp.StandardCheckpointer() as ckpt:
    return ckpt.restore(WRITER.OUT / name, target)


def assert_matches_record(name, tree):
  """`tree`'s key paths and leaves are those the script recorded, exactly."""
  with np.load(WRITER.OUT / f"{name}.npz") as npz:
    record = dict(npz)
  leaves = WRITER.flat_record(tree)
  assert sorted(leaves) == sorted(record)
  for key, leaf in leaves.items():
    assert leaf.dtype == record[key].dtype, key
    np.testing.assert_array_equal(leaf, record[key], err_msg=key)


def assert_continues(name, opt, params, state):
  """`CONTINUED` steps from (params, state) are those of the training that
  ran `K + CONTINUED` steps without stopping, step for step, bit for bit."""
  params0 = WRITER.make_params()
  grads = WRITER.gradients(name, WRITER.K + CONTINUED)
  final, final_state, uninterrupted = run(opt, params0, opt.init(params0),
                                          grads)
  got, got_state, resumed = run(opt, params, state, grads[WRITER.K:])
  for a, b in zip(uninterrupted[WRITER.K:], resumed):
    assert_trees_equal(a, b)
  assert_trees_equal(got_state, final_state)
  assert_trees_equal(ox.finalize_variable_values(got, got_state),
                     ox.finalize_variable_values(final, final_state))


def test_the_0_2_0_checkpoints_were_written_by_0_2_0():
  written_by = json.loads((WRITER.OUT / "written_by.json").read_text())
  assert written_by["optax_suite_commit"].startswith(WRITER.RELEASE)
  assert written_by["steps"] == WRITER.K
  assert sorted(p.name for p in WRITER.OUT.iterdir() if p.is_dir()) == sorted(
      WRITER.OPTIMIZERS)


@pytest.mark.fast_cases(2)  # about 1 s each; the others in CI
@pytest.mark.parametrize("name", sorted(WRITER.OPTIMIZERS))
def test_a_state_checkpointed_by_0_2_0_restores_and_continues(name):
  opt = WRITER.OPTIMIZERS[name]()
  params0 = WRITER.make_params()
  restored = restore_0_2_0(name, opt, params0)
  assert jax.tree.structure(restored) == jax.tree.structure(
      {"params": params0, "opt_state": opt.init(params0)})
  # Not orbax's doing: the arrays and key paths are those 0.2.0 recorded.
  assert_matches_record(name, restored)
  # Today's code takes 0.2.0's first K steps, bit for bit.
  params, state, _ = run(opt, params0, opt.init(params0),
                         WRITER.gradients(name, WRITER.K))
  assert_trees_equal({"params": params, "opt_state": state}, restored)
  assert_continues(name, opt, restored["params"], restored["opt_state"])


def test_a_fresh_state_in_place_of_the_0_2_0_one_fails_both_checks():
  """The checks can fail: with the restored parameters but today's fresh
  init, the state is not the recorded one and training does not continue."""
  name = "adam_ema_accumulation"
  opt = WRITER.OPTIMIZERS[name]()
  params0 = WRITER.make_params()
  restored = restore_0_2_0(name, opt, params0)
  fresh = {"params": restored["params"], "opt_state": opt.init(params0)}
  with pytest.raises(AssertionError):
    assert_matches_record(name, fresh)
  with pytest.raises(AssertionError):
    assert_continues(name, opt, fresh["params"], fresh["opt_state"])


def restore_without_target(path, tree):
  """What orbax gives back with no target: dicts, lists, None."""
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(path, tree)
    ckpt.wait_until_finished()
  with ocp.StandardCheckpointer() as ckpt:
    return ckpt.restore(path)


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_an_orbax_restore_without_target_migrates_to_the_same_state(
    name, tmp_path):
  """An orbax restore with no target gives dicts for states, lists for
  chains and None for empty states; `migrate_state` reads it back as the
  very state that was saved (bit for bit), which then trains on as before."""
  opt = OPTIMIZERS[name]()
  params = keras_oracle.make_params(5)
  grads = keras_oracle.varied_grads(params, 2 * STEPS, seed=5)
  params, state, _ = run(opt, params, opt.init(params), grads[:STEPS - 1])
  raw = restore_without_target(tmp_path / "ckpt", state)
  assert isinstance(raw, dict)  # not a state: orbax lost the types.
  migrated = ox.migrate_state(raw, opt, params)
  assert_trees_equal(migrated, state)
  _, _, ours = run(opt, params, migrated, grads[STEPS - 1:])
  _, _, theirs = run(opt, params, state, grads[STEPS - 1:])
  for a, b in zip(ours, theirs):
    assert_trees_equal(a, b)


def test_lazy_accumulation_state_of_0_2_0_layout_migrates_with_rank3_leaves(
    tmp_path):
  """0.2.0 marked touched rows (`RowAccumulationState.touched`) for 2-D
  leaves only; the marks of leaves of rank 3 or more, which row-sparse
  gradients may now reach, are new. Such a checkpoint (saved mid-cycle)
  does not restore into today's structure, but `migrate_state` of its
  target-less restore gives today's state, new marks unset, which is exact:
  0.2.0 gave those leaves dense gradients only, and marks are read for
  row-sparse ones. It continues as the run that never stopped."""
  opt = ox.adam(0.05, lazy_rows=True, gradient_accumulation_steps=3,
                use_ema=True)
  params = {"cube": jnp.linspace(-1, 1, 30).reshape(5, 2, 3),
            "table": jnp.linspace(1, 2, 24).reshape(6, 4)}
  grads = keras_oracle.varied_grads(params, 12, seed=6)
  # Mid-cycle after 5 calls: the accumulator holds calls 4 and 5 (call 4's
  # gradient is all zeros: varied_grads' kind 3).
  params, state, _ = run(opt, params, opt.init(params), grads[:5])
  assert int(state.count) % 3 == 2
  assert np.any(np.asarray(state.inner.accumulated["table"]) != 0)
  touched = state.inner.touched
  assert touched["cube"] is not None and not np.any(touched["cube"])
  old = state._replace(inner=state.inner._replace(
      touched=dict(touched, cube=None)))  # 0.2.0's layout.
  with pytest.raises(Exception):
    save_and_restore(tmp_path / "direct", old, jax.eval_shape(lambda: state))
  raw = restore_without_target(tmp_path / "raw", old)
  migrated = ox.migrate_state(raw, opt, params)
  assert_trees_equal(migrated, state)
  _, _, ours = run(opt, params, migrated, grads[5:])
  _, _, theirs = run(opt, params, state, grads[5:])
  for a, b in zip(ours, theirs):
    assert_trees_equal(a, b)
