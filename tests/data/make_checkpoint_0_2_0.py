"""Writes tests/data/checkpoint_0_2_0/: optimizer states saved by 0.2.0.

Written by optax_suite 0.2.0, the release commit 69cb99f, with the
orbax-checkpoint, jax and numpy versions recorded in
``checkpoint_0_2_0/written_by.json``. tests/test_checkpoint.py restores these
files with today's code: a state checkpointed by 0.2.0 must restore and
training must continue (issue 17, "What must not change: State structures").

For each optimizer of ``OPTIMIZERS`` the script takes ``K`` steps from
``make_params()`` with ``gradients(name, K)`` and writes

* ``checkpoint_0_2_0/<name>/``: an orbax ``StandardCheckpointer`` checkpoint
  of ``{"params": params, "opt_state": state}``;
* ``checkpoint_0_2_0/<name>.npz``: the same leaves as plain numpy arrays,
  keyed by their ``jax.tree_util.keystr`` path, so that the test can check
  the restored values and 0.2.0's key paths without going through orbax.

The test imports this module for the optimizers, the parameters and the
gradients, so it continues exactly the training written here. The
gradients are computed in numpy float64 (sines, exact zeros, large and
small values, and an inf for the loss-scale optimizer to skip) and rounded
to float32, so they do not depend on the jax version.

To write the files again, with 0.2.0's code (the script refuses other code),
from the repository root (the files land next to this script)::

  git worktree add /tmp/v020 69cb99f
  export PYTHONPATH=/tmp/v020 KERAS_BACKEND=jax
  python tests/data/make_checkpoint_0_2_0.py
  git worktree remove --force /tmp/v020
"""

import json
import pathlib
import shutil
import subprocess

import jax
import numpy as np
import optax

import optax_suite as ox

RELEASE = "69cb99f"  # 0.2.0
K = 5  # steps before the checkpoint
OUT = pathlib.Path(__file__).resolve().parent / "checkpoint_0_2_0"

# Every constructor exists with these arguments in 0.2.0 and today.
OPTIMIZERS = {
    # A half-filled accumulator at the checkpoint (K is odd), and an EMA
    # whose overwrite comes after it.
    "adam_ema_accumulation": lambda: ox.adam(
        0.01, use_ema=True, ema_overwrite_frequency=3,
        gradient_accumulation_steps=2),
    "nadam": lambda: ox.nadam(0.01),  # the u_product slot
    "adafactor": lambda: ox.adafactor(0.01),  # factored r, c; unfactored v
    "muon": lambda: ox.muon(0.01),  # Muon on the kernel, Adam on the bias
    "lion_ema": lambda: ox.lion(0.001, use_ema=True, weight_decay=0.01),
    "loss_scale_adamw": lambda: ox.loss_scale_optimizer(
        ox.adamw(0.01, use_ema=True), initial_scale=16.0,
        dynamic_growth_steps=2),
}


def make_params():
  """A kernel (3, 4) and a bias (4,), float32."""
  kernel = np.sin(np.arange(12.0)).reshape(3, 4)
  bias = np.cos(np.arange(4.0))
  return {"dense": {"kernel": jax.numpy.asarray(kernel, np.float32),
                    "bias": jax.numpy.asarray(bias, np.float32)}}


def gradients(name, steps):
  """`steps` gradients for `name`'s optimizer, step by step.

  The first `K` are those the checkpoint was trained on; later ones continue
  the sequence. Computed in float64 numpy, rounded to float32.
  """
  params = make_params()
  seq = []
  for t in range(steps):
    def leaf(p, t=t):
      n = np.arange(np.size(p), dtype=np.float64).reshape(np.shape(p))
      g = np.sin(0.7 * n + 1.3 * t + 0.1 * np.size(p))
      kind = t % 4
      if kind == 1:
        g = np.where(n % 3 == 0, 0.0, g)  # exact zeros in places
      elif kind == 2:
        g = g * 100.0  # large values
      elif kind == 3:
        g = -np.abs(g) * 0.01  # one sign, small
      if name.startswith("loss_scale") and t == 2:
        g = np.where(n == 1, np.inf, g)  # a step the scale optimizer skips
      return jax.numpy.asarray(g, np.float32)
    seq.append(jax.tree.map(leaf, params))
  return seq


def train(opt, params, state, grads):
  """`len(grads)` steps of `opt.update` and `optax.apply_updates`."""
  @jax.jit
  def step(params, state, g):
    updates, state = opt.update(g, state, params)
    return optax.apply_updates(params, updates), state
  for g in grads:
    params, state = step(params, state, g)
  return params, state


def flat_record(tree):
  """The leaves of `tree` as numpy arrays keyed by their keystr path."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in leaves}


def _source_commit():
  """The commit of the optax_suite checkout imported; refuses a dirty one."""
  root = pathlib.Path(ox.__file__).resolve().parent.parent
  def git(*args):
    return subprocess.run(["git", "-C", str(root), *args], check=True,
                          capture_output=True, text=True).stdout.strip()
  commit = git("rev-parse", "HEAD")
  if not commit.startswith(RELEASE):
    raise SystemExit(f"optax_suite is imported from {root} at {commit[:7]}, "
                     f"not 0.2.0 ({RELEASE}): see this script's docstring")
  if git("status", "--porcelain", "--", "optax_suite"):
    raise SystemExit(f"{root}/optax_suite has local changes")
  return commit


def main():
  import orbax.checkpoint as ocp  # only the writer needs it at import time

  commit = _source_commit()
  shutil.rmtree(OUT, ignore_errors=True)
  OUT.mkdir()
  for name, make in OPTIMIZERS.items():
    opt = make()
    params = make_params()
    params, state = train(opt, params, opt.init(params), gradients(name, K))
    tree = {"params": params, "opt_state": state}
    with ocp.StandardCheckpointer() as ckpt:
      ckpt.save(OUT / name, tree)
      ckpt.wait_until_finished()
    np.savez(OUT / f"{name}.npz", **flat_record(tree))
  versions = {"optax_suite_commit": commit, "steps": K}
  for module in ("jax", "optax", "orbax.checkpoint", "numpy"):
    versions[module] = __import__(module, fromlist=["_"]).__version__
  (OUT / "written_by.json").write_text(json.dumps(versions, indent=1) + "\n")
  print(f"wrote {sorted(OPTIMIZERS)} to {OUT}")


if __name__ == "__main__":
  main()
