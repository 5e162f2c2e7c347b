"""Faults: checkpoints mid-way, donated buffers, a crashed run restarted.

The optimizer under test has every stateful part in motion at once: loss
scaling (with a bad step, so the scale moves both ways), gradient
accumulation (checkpointed between micro-steps), the parameter EMA with
overwrite, weight decay on a schedule, AMSGrad slots, and an integer leaf
(None slots). Checkpoints go through `flax.serialization` bytes.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_suite as ox

STEPS = 20


def build():
  """A fresh optimizer object (as a restarted program would build it)."""
  inner = ox.adam(
      optax.exponential_decay(0.01, 4, 0.7), amsgrad=True, weight_decay=0.05,
      gradient_accumulation_steps=3, use_ema=True, ema_momentum=0.9,
      ema_overwrite_frequency=4, clipnorm=1.0)
  return ox.loss_scale_optimizer(inner, initial_scale=2.0**8,
                                 dynamic_growth_steps=2)


def setup():
  """Params (with an integer leaf: None slots) and scaled-looking grads.

  Built with numpy only, so the crashing trainer below need not import
  Keras.
  """
  rng = np.random.default_rng(4)
  shapes = {"kernel": (4, 3), "bias": (3,), "scale": ()}
  params = {k: jnp.asarray(rng.normal(size=v), jnp.float32)
            for k, v in shapes.items()}
  params["count"] = jnp.array(3, jnp.int32)
  grads = []
  for t in range(STEPS):
    g = {k: jnp.asarray(rng.normal(size=v) * 256.0 * (t % 4 != 3), jnp.float32)
         for k, v in shapes.items()}  # every 4th gradient is exactly zero
    g["count"] = jnp.array(0, jnp.int32)
    if t == 5:  # one overflowed step: skipped, scale halved
      g["scale"] = jnp.asarray(np.inf, jnp.float32)
    grads.append(g)
  return params, grads


def make_step(opt, donate=False):
  def step(params, state, grads):
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state
  return jax.jit(step, donate_argnums=(0, 1) if donate else ())


@functools.lru_cache(maxsize=None)
def shared_step():
  """One jitted step for the in-process runs (compiled once)."""
  return make_step(build())


def run(params, state, grads, step=None):
  """Steps through `grads`; returns every (params, state) as numpy."""
  step = step or shared_step()
  history = []
  for g in grads:
    params, state = step(params, state, g)
    history.append(jax.tree.map(np.asarray, (params, state)))
  return params, state, history


def assert_bitwise(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    assert x.tobytes() == y.tobytes()


@pytest.fixture(scope="module")
def uninterrupted():
  params, grads = setup()
  _, _, history = run(params, build().init(params), grads)
  # The run moves every part of the state: the scale grows and is halved.
  scales = [float(h[1].scale) for h in history]
  assert max(scales) > 2.0**8 and any(
      b == a / 2 for a, b in zip(scales, scales[1:]))
  return history


def _target(params, how):
  opt = build()
  if how == "eval_shape":
    return jax.eval_shape(opt.init, params)
  return opt.init(params)


@pytest.mark.parametrize("at,how", [(4, "eval_shape"), (8, "init")])
def test_checkpoint_mid_accumulation_resumes_bitwise(uninterrupted, at, how):
  """Save after `at` calls (mid-accumulation, EMA running), restore, resume.

  After 4 or 8 calls (the 6th is skipped by the loss scale, so 4 or 7
  count) the accumulator holds one micro-step's gradient; the restored run
  matches the uninterrupted one bit for bit at every remaining step, state
  included. (A new process with a newly built optimizer is the crash test
  below.)
  The restore target is `jax.eval_shape(opt.init, params)` (no memory for
  a throwaway state) or a real `opt.init(params)`.
  """
  params, grads = setup()
  p, s, _ = run(params, build().init(params), grads[:at])
  assert int(s.inner_state.inner.count) % 3 != 0  # mid-accumulation
  blob = flax.serialization.to_bytes((p, s))
  del p, s
  target = (jax.eval_shape(lambda: params), _target(params, how))
  p, s = flax.serialization.from_bytes(target, blob)
  assert_bitwise((p, s), uninterrupted[at - 1])
  assert isinstance(s, ox.LossScaleState)
  _, _, resumed = run(p, s, grads[at:])
  for t, got in enumerate(resumed, start=at):
    assert_bitwise(got, uninterrupted[t])


def test_checkpoint_of_another_configuration_fails_loudly():
  """Bytes saved by a different optimizer do not restore into this one."""
  params, _ = setup()
  other = ox.adam(1e-3)
  blob = flax.serialization.to_bytes(other.init(params))
  with pytest.raises((ValueError, KeyError, TypeError)):
    flax.serialization.from_bytes(_target(params, "eval_shape"), blob)


def test_truncated_checkpoint_fails_loudly():
  """A checkpoint cut short raises instead of restoring part of a state."""
  params, _ = setup()
  opt = build()
  blob = flax.serialization.to_bytes(opt.init(params))
  with pytest.raises(Exception):
    flax.serialization.from_bytes(jax.eval_shape(opt.init, params),
                                  blob[: len(blob) // 2])


def test_donated_buffers_leave_no_stale_references(uninterrupted):
  """donate_argnums=(params, state): old buffers die, new ones are good.

  After every donated step, each array of the previous params and state
  is deleted (using it raises), the returned arrays are live, and the
  run equals the non-donated one bit for bit.
  """
  params, grads = setup()
  opt = build()
  step = make_step(opt, donate=True)
  p = jax.tree.map(jnp.array, params)  # our own copies, safe to donate
  s = opt.init(p)
  for t, g in enumerate(grads):
    old = jax.tree.leaves((p, s))
    p, s = step(p, s, g)
    new = jax.tree.leaves((p, s))
    assert all(x.is_deleted() for x in old)
    assert not any(x.is_deleted() for x in new)
    assert_bitwise((p, s), uninterrupted[t])
  with pytest.raises(RuntimeError):
    np.asarray(old[0])
  assert not any(x.is_deleted() for x in jax.tree.leaves(params))


_CRASHING_TRAINER = textwrap.dedent("""
    import os, sys
    sys.path[:0] = [{tests!r}]
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import flax.serialization
    import test_faults as tf

    path, crash_at, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    params, grads = tf.setup()
    opt = tf.build()
    step = tf.make_step(opt)
    state = opt.init(params)
    for t, g in enumerate(grads):
      if t == crash_at:
        os._exit(17)  # killed: no cleanup, no final save
      params, state = step(params, state, g)
      if (t + 1) % every == 0:  # atomic checkpoint: write, then rename
        with open(path + ".tmp", "wb") as f:
          f.write(flax.serialization.to_bytes((t + 1, params, state)))
        os.replace(path + ".tmp", path)
""")


@pytest.mark.slow
def test_crashed_run_restarted_from_checkpoint_matches(uninterrupted,
                                                       tmp_path):
  """A process killed mid-run, restarted from its last checkpoint, matches.

  A separate Python process (a newly built optimizer, a new jit)
  checkpoints every 4 steps and dies abruptly before step 12: steps 9-11
  are lost. Its last checkpoint, at step 8, is mid-accumulation (7 counted
  calls, the 6th was skipped). Restarting here from that file and
  recomputing to the end gives the never-interrupted run's parameters and
  state bit for bit.
  """
  path = str(tmp_path / "ckpt.msgpack")
  tests = os.path.dirname(os.path.abspath(__file__))
  result = subprocess.run(
      [sys.executable, "-c", _CRASHING_TRAINER.format(tests=tests), path,
       "11", "4"], capture_output=True, text=True, timeout=300,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 17, result.stderr[-2000:]
  assert not os.path.exists(path + ".tmp")
  params, grads = setup()
  target = (0, jax.eval_shape(lambda: params),
            jax.eval_shape(build().init, params))
  with open(path, "rb") as f:
    done, p, s = flax.serialization.from_bytes(target, f.read())
  assert done == 8
  assert int(s.inner_state.inner.count) % 3 == 1  # mid-accumulation
  assert_bitwise((p, s), uninterrupted[done - 1])
  _, _, resumed = run(p, s, grads[done:])
  for t, got in enumerate(resumed, start=done):
    assert_bitwise(got, uninterrupted[t])
