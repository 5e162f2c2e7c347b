"""Training on several hosts: FSDP-sharded parameters and optimizer state.

Every process runs this same program. The parameters, the optimizer state
and the batch are sharded over one global mesh axis ("fsdp") that spans the
devices of all processes; each process holds only its shards. Two runs share
the data: AdamW (global_clipnorm, the parameter EMA, gradient accumulation)
and Muon, each stepped with `ox.apply`. Half-way, both are saved with
orbax-checkpoint (every process writes its shards); at the end the final loss
is printed.

Modes:

  python examples/multihost.py [--out DIR]
      Launcher: picks a free port, starts 2 worker processes on 127.0.0.1,
      each with 2 CPU devices (a 4-device global mesh, gloo collectives),
      waits for both within a time limit, and stops the other one if one
      fails.

  python examples/multihost.py --process-id I --num-processes N \
      --coordinator HOST:PORT [--out DIR]
      One worker, joined with jax.distributed.initialize(HOST:PORT, N, I).

  python examples/multihost.py --cluster [--out DIR]
      On a GPU cluster (SLURM, Open MPI, Kubernetes) or a TPU pod: start one
      copy per host, jax.distributed.initialize() finds the coordinator,
      process count and id itself. DIR must be on a file system that every
      host sees (for the checkpoint).

  python examples/multihost.py --single [--resume CKPT] [--out DIR]
      The same training on one device (the reference); with --resume, the
      checkpoint written half-way by the multi-process run is restored onto
      one device and training continues from there.

With --out, process 0 writes `DIR/<mode>.npz` (the final parameters and the
losses; mode: multihost, single or resumed) and every process writes
`DIR/report_<mode>_<id>.json` (sharding checks, all-gathers found in the
compiled steps); tests/test_multihost.py reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time

STEPS = 20
BATCH, FEATURES, HIDDEN, OUT = 64, 16, 64, 8
AXIS = "fsdp"


def free_port() -> int:
  """A port the OS has just handed out (bound to 0), for the coordinator."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(args) -> int:
  """Starts `args.num_processes` local workers; every one exits in bounded
  time: a worker that fails gets its siblings stopped, and all are killed
  at the deadline."""
  n = args.num_processes or 2
  coordinator = f"127.0.0.1:{free_port()}"
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count="
             f"{args.local_devices}")
  base = [sys.executable, os.path.abspath(__file__),
          "--num-processes", str(n), "--coordinator", coordinator,
          "--steps", str(args.steps), "--timeout", str(args.timeout)]
  if args.fail_at is not None:
    base += ["--fail-at", str(args.fail_at)]
  if args.out:
    base += ["--out", args.out]
  procs = [subprocess.Popen(base + ["--process-id", str(i)], env=env)
           for i in range(n)]
  deadline = time.monotonic() + args.timeout
  status = 0
  while True:
    codes = [p.poll() for p in procs]
    failed = [c for c in codes if c not in (None, 0)]
    if failed or time.monotonic() > deadline:
      status = failed[0] if failed else 124
      why = (f"a worker exited with {failed[0]}" if failed
             else f"the {args.timeout} s time limit passed")
      print(f"launcher: {why}; stopping the others", file=sys.stderr)
      for p in procs:
        if p.poll() is None:
          p.terminate()
      for p in procs:
        try:
          p.wait(timeout=10)
        except subprocess.TimeoutExpired:
          p.kill()
          p.wait()
      return status
    if all(c == 0 for c in codes):
      return 0
    time.sleep(0.1)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--process-id", type=int)
  parser.add_argument("--num-processes", type=int)
  parser.add_argument("--coordinator", help="HOST:PORT of process 0")
  parser.add_argument("--cluster", action="store_true",
                      help="jax.distributed.initialize() with no arguments")
  parser.add_argument("--single", action="store_true",
                      help="one device, no jax.distributed (the reference)")
  parser.add_argument("--resume", help="with --single: a checkpoint to "
                      "restore and continue from")
  parser.add_argument("--out", help="directory for the results and the "
                      "checkpoint")
  parser.add_argument("--steps", type=int, default=STEPS)
  parser.add_argument("--fail-at", type=int, help="testing: the last "
                      "process exits with status 3 at this step")
  parser.add_argument("--local-devices", type=int, default=2,
                      help="launcher: CPU devices per local worker")
  parser.add_argument("--timeout", type=int, default=300,
                      help="seconds: the launcher's limit for the workers, "
                      "and jax.distributed's initialization timeout")
  args = parser.parse_args(argv)
  if args.out:
    args.out = os.path.abspath(args.out)
  if not (args.single or args.cluster or args.process_id is not None):
    return launch(args)
  return run(args)


def run(args) -> int:
  import jax

  # CPU collectives between processes (ignored by GPU and TPU backends).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if args.cluster:
    jax.distributed.initialize()
  elif not args.single:
    jax.distributed.initialize(
        args.coordinator, args.num_processes, args.process_id,
        initialization_timeout=args.timeout,
        # A dead sibling is noticed within this, and this process stops.
        heartbeat_timeout_seconds=20, shutdown_timeout_seconds=30)

  from jax.experimental import multihost_utils
  import jax.numpy as jnp
  from jax.sharding import AxisType
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P
  import numpy as np
  import orbax.checkpoint as ocp

  import optax_suite as ox

  devices = jax.devices()[:1] if args.single else jax.devices()
  # Automatic axes: the compiler places the collectives (sharding is not
  # in the types, so `x @ w1 + b1` may mix layouts).
  mesh = jax.make_mesh((len(devices),), (AXIS,), devices=devices,
                       axis_types=(AxisType.Auto,))
  me = jax.process_index()
  log = lambda *a: print(f"[process {me}]", *a, flush=True)
  log(f"{jax.process_count()} processes, {len(devices)} devices, "
      f"{jax.local_device_count()} here")

  # The same host data in every process; each puts only its shards on its
  # devices. FSDP: every parameter is split over all devices on its first
  # axis, and so is the batch.
  rng = np.random.default_rng(0)
  shapes = {"w1": (FEATURES, HIDDEN), "b1": (HIDDEN,),
            "w2": (HIDDEN, HIDDEN), "b2": (HIDDEN,),
            "w3": (HIDDEN, OUT), "b3": (OUT,)}
  host_params = {k: (rng.standard_normal(s) / np.sqrt(s[0])).astype(
      np.float32) if len(s) == 2 else np.zeros(s, np.float32)
      for k, s in shapes.items()}
  x_host = rng.standard_normal((BATCH, FEATURES)).astype(np.float32)
  y_host = np.sin(x_host @ rng.standard_normal((FEATURES, OUT))).astype(
      np.float32)
  shardings = {k: NamedSharding(mesh, P(AXIS)) for k in shapes}
  batch_sharding = NamedSharding(mesh, P(AXIS))

  def put(host, sharding):
    return jax.make_array_from_callback(host.shape, sharding,
                                        lambda idx: host[idx])

  def new_params():  # Its own buffers for each run: the steps donate them.
    return {k: put(v, shardings[k]) for k, v in host_params.items()}

  params0 = new_params()
  x, y = put(x_host, batch_sharding), put(y_host, batch_sharding)

  def loss_fn(p, x, y):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    h = jnp.tanh(h @ p["w2"] + p["b2"])
    return jnp.mean(jnp.square(h @ p["w3"] + p["b3"] - y))

  optimizers = {
      "adamw": ox.adamw(learning_rate=0.01, weight_decay=0.01,
                        global_clipnorm=1.0, use_ema=True,
                        gradient_accumulation_steps=2),
      "muon": ox.muon(learning_rate=0.02),
  }
  grad_step = jax.jit(jax.value_and_grad(loss_fn))
  update_steps = {name: jax.jit(lambda g, ps, opt=opt: ox.apply(opt, g, ps),
                                donate_argnums=1)
                  for name, opt in optimizers.items()}

  # Init under jit: the state follows the parameters' shardings.
  runs = {}
  for name, opt in optimizers.items():
    params = new_params()
    runs[name] = (params, jax.jit(opt.init)(params))
  first = 0
  half = args.steps // 2
  ckpt_dir = pathlib.Path(args.out or "/tmp/optax_suite_multihost") / "ckpt"
  checkpointer = ocp.StandardCheckpointer()
  if args.resume:
    # The multi-process checkpoint, restored onto this run's (one-device)
    # layout: the abstract target carries the shardings wanted.
    target = {"runs": {n: list(r) for n, r in runs.items()}}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = checkpointer.restore(os.path.abspath(args.resume), abstract)
    runs = {n: tuple(r) for n, r in restored["runs"].items()}
    first = half
    log(f"restored {args.resume} at step {half}")

  by_path = {jax.tree_util.keystr(k): p for k, p in
             jax.tree_util.tree_flatten_with_path(params0)[0]}

  def sharding_mismatches(state):
    """Every state leaf of a parameter's shape, under its key, must have its
    parameter's sharding."""
    bad, checked = [], 0
    for k, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
      path = jax.tree_util.keystr(k)
      owner = [p for q, p in by_path.items() if path.endswith(q)]
      if owner and owner[0].shape == leaf.shape:
        checked += 1
        if not leaf.sharding.is_equivalent_to(owner[0].sharding, leaf.ndim):
          bad.append(f"{path}: {leaf.sharding} != {owner[0].sharding}")
    return bad, checked

  gather_re = re.compile(
      r"= [a-z0-9]+\[([0-9,]*)\]\{[0-9,]*\} all-gather\(")
  param_shapes = {",".join(map(str, s)) for s in shapes.values()}

  def gathered(compiled_text):
    found = sorted(set(gather_re.findall(compiled_text)))
    return {"gathered_shapes": found,
            "whole_parameters": [s for s in found if s in param_shapes]}

  report = {"process": me, "processes": jax.process_count(),
            "devices": len(devices), "runs": {}}
  losses = {name: [] for name in optimizers}
  for name in optimizers:
    params, state = runs[name]
    g = grad_step(params, x, y)[1]
    report["runs"][name] = {
        "update_step": gathered(update_steps[name].lower(
            g, (params, state)).compile().as_text()),
        "grad_step": gathered(grad_step.lower(
            params, x, y).compile().as_text()),
        "state_mismatches_at_init": sharding_mismatches(state)[0],
        "state_leaves_checked": sharding_mismatches(state)[1],
    }
  for step in range(first, args.steps):
    if step == args.fail_at and me == jax.process_count() - 1:
      log(f"failing on purpose at step {step}")
      os._exit(3)
    if step == half and not args.single:
      # Every process calls save: each writes its own shards.
      path = ckpt_dir / f"step_{half}"
      checkpointer.save(path, {"runs": {n: list(r) for n, r in runs.items()}},
                        force=True)
      checkpointer.wait_until_finished()
      log(f"saved {path}")
    for name in optimizers:
      params, state = runs[name]
      loss, grads = grad_step(params, x, y)
      runs[name] = update_steps[name](grads, (params, state))
      losses[name].append(float(loss))  # replicated: every process has it
  for name in optimizers:
    params, state = runs[name]
    bad, checked = sharding_mismatches(state)
    report["runs"][name]["state_mismatches_at_end"] = bad
    report["runs"][name]["state_leaves_checked_at_end"] = checked
    report["runs"][name]["param_shardings_kept"] = all(
        params[k].sharding.is_equivalent_to(shardings[k], params[k].ndim)
        for k in params)
    # The EMA weights swapped in (AdamW's use_ema; Muon's are its params).
    final = ox.finalize_variable_values(params, state)
    log(f"{name}: last step's loss {losses[name][-1]:.6f}, final loss "
        f"{float(jax.jit(loss_fn)(params, x, y)):.6f}, with the EMA weights "
        f"{float(jax.jit(loss_fn)(final, x, y)):.6f}")

  if args.out:
    mode = ("resumed" if args.resume else "single" if args.single
            else "multihost")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"report_{mode}_{me}.json"), "w") as f:
      json.dump(report, f, indent=1)
    # Collective: every process takes part in gathering the shards.
    whole = multihost_utils.process_allgather(
        {n: r[0] for n, r in runs.items()}, tiled=True)
    if me == 0:
      arrays = {f"{n}/{k}": np.asarray(v) for n, p in whole.items()
                for k, v in p.items()}
      arrays.update({f"{n}/losses": np.asarray(v, np.float32)
                     for n, v in losses.items()})
      np.savez(os.path.join(args.out, f"{mode}.npz"), **arrays)
  if not args.single:
    jax.distributed.shutdown()
  return 0


if __name__ == "__main__":
  sys.exit(main())
