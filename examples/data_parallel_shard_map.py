"""Data-parallel training with `jax.shard_map` and a gradient `lax.pmean`.

Each device holds a copy of the parameters and of the optimizer state and one
slice of the batch. It computes the gradient of its slice, averages it over
the devices with `jax.lax.pmean`, and then every device runs the same
optimizer update on the same averaged gradient, so the copies stay equal.
Nothing in the optimizer knows about devices.

Run it on 8 fake CPU devices:

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      python examples/data_parallel_shard_map.py [STEPS]

It prints the loss every few steps, checks that the sharded run matches the
same steps on one device with the whole batch, and prints a JSON summary.
"""

from __future__ import annotations

import functools
import json
import os

os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import optax_suite as ox  # noqa: E402

shard_map = getattr(jax, "shard_map", None)
if shard_map is None:  # Older JAX.
  from jax.experimental.shard_map import shard_map  # noqa: E402


def mark_varying(tree, axis_name):
  """Marks a replicated value as differing across `axis_name` (a no-op type
  change). Under `shard_map`'s replication checking, the gradient with
  respect to a value that is the same on every device comes out already
  summed over the devices; with respect to a varying one it is the local
  gradient, which `lax.pmean` then averages."""
  if hasattr(jax.lax, "pcast"):
    return jax.lax.pcast(tree, axis_name, to="varying")
  if hasattr(jax.lax, "pvary"):
    return jax.lax.pvary(tree, axis_name)
  return tree  # Older JAX: gradients are always the local ones.


def loss_fn(params, x, y):
  hidden = jnp.tanh(x @ params["w1"] + params["b1"])
  pred = hidden @ params["w2"] + params["b2"]
  return jnp.mean(jnp.square(pred - y))


def make_problem(batch=256, features=16, hidden=32, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((batch, features), dtype=np.float32)
  y = np.sin(x @ rng.standard_normal((features, 1), dtype=np.float32))
  params = {
      "w1": rng.standard_normal((features, hidden), dtype=np.float32) * 0.3,
      "b1": np.zeros((hidden,), np.float32),
      "w2": rng.standard_normal((hidden, 1), dtype=np.float32) * 0.3,
      "b2": np.zeros((1,), np.float32),
  }
  return jax.tree.map(jnp.asarray, params), jnp.asarray(x), jnp.asarray(y)


def main(steps=40):
  opt = ox.adam(learning_rate=0.01, global_clipnorm=1.0, weight_decay=1e-4,
                use_ema=True, gradient_accumulation_steps=2)
  devices = jax.devices()
  mesh = jax.make_mesh((len(devices),), ("data",))
  params, x, y = make_problem(batch=32 * len(devices))
  x_full, y_full = x, y
  state = opt.init(params)
  # The single-device run, on its own buffers: both steps donate theirs.
  ref_params, ref_state = jax.tree.map(jnp.copy, (params, state))
  # Place everything on the mesh: the batch split on "data", the parameters
  # and the optimizer state replicated (one full copy per device).
  replicated = NamedSharding(mesh, P())
  params, state = jax.device_put((params, state), replicated)
  x, y = jax.device_put((x, y), NamedSharding(mesh, P("data")))

  def local_step(params, state, x, y):
    # Differentiate this device's copy of the parameters: marked as varying
    # over "data", the gradient is this device's own, not yet summed.
    local = mark_varying(params, "data")
    loss, grads = jax.value_and_grad(loss_fn)(local, x, y)
    grads = jax.lax.pmean(grads, "data")  # The one line data parallelism needs.
    loss = jax.lax.pmean(loss, "data")
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  # Parameters and state are replicated (P()), the batch is split on "data".
  parallel_step = jax.jit(shard_map(
      local_step, mesh=mesh,
      in_specs=(P(), P(), P("data"), P("data")),
      out_specs=(P(), P(), P())), donate_argnums=(0, 1))

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def single_device_step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for step in range(steps):
    params, state, loss = parallel_step(params, state, x, y)
    ref_params, ref_state, _ = single_device_step(
        ref_params, ref_state, x_full, y_full)
    losses.append(float(loss))
    if step % 10 == 0:
      print(f"step {step:3d}  loss {losses[-1]:.5f}")
  deviation = max(
      float(jnp.max(jnp.abs(a - b)))
      for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)))
  summary = {"devices": len(devices), "first_loss": losses[0],
             "last_loss": losses[-1], "max_deviation_vs_one_device": deviation}
  print(json.dumps(summary))
  return summary


if __name__ == "__main__":
  import sys
  main(steps=int(sys.argv[1]) if len(sys.argv) > 1 else 40)
