"""Gradient accumulation: Keras's counting, and no update work on micro-steps."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_suite as ox


def _grads(n, seed=0):
  rng = np.random.default_rng(seed)
  return [{"w": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
          for _ in range(n)]


@pytest.mark.parametrize("k", [2, 3, 5])
def test_update_every_k_calls_with_the_mean(k):
  """Inner sees (g + sum of micro-step grads) / k on every k-th call only."""
  inner = ox.scale_by_adam()
  tx = ox.accumulate_gradients(inner, k)
  params = {"w": jnp.zeros(3)}
  state, ref_state = tx.init(params), inner.init(params)
  grads = _grads(3 * k)
  for i, g in enumerate(grads):
    u, state = jax.jit(tx.update)(g, state)
    if (i + 1) % k:
      np.testing.assert_array_equal(u["w"], np.zeros(3))
    else:
      window = grads[i + 1 - k:i + 1]
      mean = {"w": (window[-1]["w"] + sum(w["w"] for w in window[:-1])) / k}
      ref, ref_state = inner.update(mean, ref_state)
      np.testing.assert_allclose(u["w"], ref["w"], rtol=1e-6, atol=1e-7)
  assert int(state.inner_state.count) == 3  # update steps, not calls
  assert int(state.count) == 3 * k


def test_micro_steps_leave_inner_state_bitwise_unchanged():
  tx = ox.accumulate_gradients(ox.scale_by_adamax(), 4)
  params = {"w": jnp.zeros(3)}
  state = tx.init(params)
  state = tx.update(_grads(4)[0], state)[1]  # fill nothing special
  before = state.inner_state
  for g in _grads(2, seed=1):
    _, state = tx.update(g, state)
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.inner_state)):
    np.testing.assert_array_equal(a, b)


def test_micro_step_runs_no_update_work():
  """The update is behind a lax.cond: the inner rule sits in one branch only."""
  tx = ox.accumulate_gradients(ox.scale_by_adam(), 4)
  params = {"w": jnp.zeros(3)}
  state = tx.init(params)
  jaxpr = jax.make_jaxpr(tx.update)(params, state).jaxpr
  conds = [e for e in jaxpr.eqns if e.primitive.name == "cond"]
  assert len(conds) == 1
  branches = conds[0].params["branches"]
  has_sqrt = ["sqrt" in str(b) for b in branches]
  assert sorted(has_sqrt) == [False, True]  # Adam's sqrt: update branch only


def test_accumulator_is_reset_after_update():
  tx = ox.accumulate_gradients(optax.sgd(1.0), 2)
  state = tx.init(jnp.zeros(2))
  for g in ([1.0, 2.0], [3.0, 4.0]):
    _, state = tx.update(jnp.asarray(g), state)
  np.testing.assert_array_equal(state.accumulated, np.zeros(2))


def test_rejects_fewer_than_two_steps():
  with pytest.raises(ValueError, match="gradient_accumulation_steps.*1"):
    ox.accumulate_gradients(optax.sgd(1.0), 1)


def test_multisteps_composes_but_is_not_gradient_accumulation_steps():
  """`optax.MultiSteps(ox.adam(...), k)` runs, jitted, with params; it is
  not `gradient_accumulation_steps=k` (the numbers docs/guides/accumulation.md quotes):

  * constant learning rate: the same up to rounding (MultiSteps keeps a
    running mean, `acc + (g - acc) / n`, where Keras sums and divides by k);
  * a schedule inside MultiSteps counts update steps, where Keras's counts
    every call: MultiSteps equals `gradient_accumulation_steps=k` with the
    schedule taken at `call // k`, and is far from the real one;
  * the EMA inside MultiSteps runs on update steps only, Keras's on every
    call.
  """
  from keras_oracle import make_params, max_deviation, ours_trajectory
  from keras_oracle import varied_grads
  k, steps = 4, 28
  params = make_params(41)
  grads = varied_grads(params, steps, seed=41)
  run = lambda opt: ours_trajectory(opt, params, grads)
  accumulate = dict(gradient_accumulation_steps=k)

  multi, state = run(optax.MultiSteps(ox.adam(0.01), k))
  assert int(state.gradient_step) == steps // k
  plain, _ = run(ox.adam(0.01, **accumulate))
  assert 0 < max_deviation(plain, multi) <= 1e-6

  sched = ox.schedules.exponential_decay(0.01, 4, 0.5)
  multi, _ = run(optax.MultiSteps(ox.adam(sched), k))
  assert max_deviation(run(ox.adam(sched, **accumulate))[0], multi) > 1e-2
  per_update = lambda count: sched(count // k)
  assert max_deviation(run(ox.adam(per_update, **accumulate))[0],
                       multi) <= 1e-6

  ema = dict(use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=2)
  multi, _ = run(optax.MultiSteps(ox.adam(0.01, **ema), k))
  assert max_deviation(run(ox.adam(0.01, **ema, **accumulate))[0],
                       multi) > 1e-3


def test_accumulation_guide_says_when_to_use_which():
  import pathlib
  guide = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "guides"
           / "accumulation.md")
  text = guide.read_text()
  assert "\n## MultiSteps or gradient_accumulation_steps?\n" in text
