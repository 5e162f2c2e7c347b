"""examples/multihost.py: two processes on 127.0.0.1, one 4-device mesh.

The example's launcher starts 2 worker processes (2 CPU devices each, gloo
collectives, joined with `jax.distributed.initialize`), which train AdamW
(global_clipnorm, EMA, gradient accumulation) and Muon on FSDP-sharded
parameters and state with `ox.apply`, and checkpoint half-way with orbax.
Then the same script runs the training on one device (`--single`) and
restores the half-way checkpoint onto one device and continues
(`--single --resume`). The workers write what they checked (the state's
shardings, the all-gathers in the compiled steps) to JSON; the tests assert
on those files. Each child has a time limit; the whole module took 67 s and
116 s in two runs here (2 shared cores).
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "examples" / "multihost.py")
HALF = 10  # the example's default 20 steps, checkpointed half-way

pytestmark = pytest.mark.slow


def child_env(**extra):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  # The script's directory comes first on its sys.path: put this tree's
  # package ahead of any installed copy.
  env.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
             PYTHONPATH=os.pathsep.join(
                 [str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
  env.update(extra)
  return env


def run(args, timeout=300):
  start = time.monotonic()
  proc = subprocess.run([sys.executable, EXAMPLE, *args], env=child_env(),
                        cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  return proc.stdout, time.monotonic() - start


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  out = tmp_path_factory.mktemp("multihost")
  stdout, seconds = run(["--out", str(out), "--timeout", "240"])
  run(["--single", "--out", str(out)])
  run(["--single", "--out", str(out),
       "--resume", str(out / "ckpt" / f"step_{HALF}")])
  load = lambda mode: dict(np.load(out / f"{mode}.npz"))
  reports = [json.loads((out / f"report_multihost_{i}.json").read_text())
             for i in range(2)]
  return {"multihost": load("multihost"), "single": load("single"),
          "resumed": load("resumed"), "reports": reports, "stdout": stdout,
          "seconds": seconds}


def max_diff(a, b, keys):
  return max(float(np.max(np.abs(a[k] - b[k]))) for k in keys)


def param_keys(arrays):
  return [k for k in arrays if not k.endswith("/losses")]


def test_two_processes_train_and_print_the_final_loss(results):
  assert all(r["processes"] == 2 and r["devices"] == 4
             for r in results["reports"])
  assert "adamw: last step's loss" in results["stdout"]
  for name in ("adamw", "muon"):
    losses = results["multihost"][f"{name}/losses"]
    assert len(losses) == 2 * HALF and losses[-1] < 0.5 * losses[0]


def test_two_processes_equal_one_device(results):
  """(a) The 4-device, 2-process run gives the one-device numbers to
  float32 rounding (sums reduced across shards in another order)."""
  multi, single = results["multihost"], results["single"]
  assert sorted(multi) == sorted(single)
  assert max_diff(multi, single, param_keys(multi)) <= 1e-5
  for name in ("adamw", "muon"):
    np.testing.assert_allclose(multi[f"{name}/losses"],
                               single[f"{name}/losses"], rtol=1e-5, atol=1e-6)


def test_state_leaves_have_their_parameters_sharding(results):
  """(b) In every worker, at init (jitted) and after the last step, each
  state leaf of a parameter's shape has that parameter's sharding."""
  for report in results["reports"]:
    for name, run_ in report["runs"].items():
      assert run_["state_mismatches_at_init"] == [], (name, run_)
      assert run_["state_mismatches_at_end"] == [], (name, run_)
      assert run_["state_leaves_checked"] > 0
      assert run_["param_shardings_kept"]
  # AdamW: m, v, the EMA and the accumulator of each of 6 parameters; Muon:
  # a momentum per matrix, Adam's m and v for the vectors.
  runs = results["reports"][0]["runs"]
  assert runs["adamw"]["state_leaves_checked"] == 24
  assert runs["muon"]["state_leaves_checked"] == 9


def test_optimizer_step_gathers_no_whole_parameter(results):
  """(c) The compiled `ox.apply` step of AdamW has no all-gather at all.
  Muon's Newton-Schulz multiplies whole matrices, so it gathers its two
  larger matrices whole (as muon's docstring says). The forward and
  backward pass gathers every weight whole: that is FSDP itself (the model's
  matmuls), not the optimizer."""
  for report in results["reports"]:
    runs = report["runs"]
    assert runs["adamw"]["update_step"]["gathered_shapes"] == []
    assert runs["muon"]["update_step"]["whole_parameters"] == [
        "16,64", "64,64"]
    assert set(runs["adamw"]["grad_step"]["whole_parameters"]) == {
        "16,64", "64", "64,64", "64,8", "8"}


def test_checkpoint_restores_on_one_device_and_continues(results):
  """(d) The half-way checkpoint of the 2-process run, restored onto one
  device, continues to the 2-process run's final numbers."""
  multi, resumed = results["multihost"], results["resumed"]
  assert max_diff(multi, resumed, param_keys(multi)) <= 1e-5
  for name in ("adamw", "muon"):
    np.testing.assert_allclose(resumed[f"{name}/losses"],
                               multi[f"{name}/losses"][HALF:],
                               rtol=1e-5, atol=1e-6)


def test_a_failing_worker_stops_the_launcher_and_its_sibling(tmp_path):
  """The launcher stops the other worker when one exits non-zero, and
  returns that status, well within its time limit."""
  start = time.monotonic()
  proc = subprocess.run(
      [sys.executable, EXAMPLE, "--fail-at", "2", "--timeout", "120",
       "--out", str(tmp_path)], env=child_env(), cwd=ROOT,
      capture_output=True, text=True, timeout=150)
  assert proc.returncode == 3, proc.stderr[-3000:]
  assert "stopping the others" in proc.stderr
  assert time.monotonic() - start < 100


def test_a_worker_whose_sibling_dies_exits_on_its_own(tmp_path):
  """Without the launcher (as on a cluster), the survivor of a failed
  worker is stopped by jax.distributed's heartbeat (20 s in the example)
  instead of waiting in a collective forever."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = child_env(XLA_FLAGS="--xla_force_host_platform_device_count=2")
  start = time.monotonic()
  procs = [subprocess.Popen(
      [sys.executable, EXAMPLE, "--process-id", str(i), "--num-processes",
       "2", "--coordinator", f"127.0.0.1:{port}", "--fail-at", "2",
       "--timeout", "60"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL) for i in range(2)]
  try:
    codes = [p.wait(timeout=150) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert codes[1] == 3
  assert codes[0] != 0  # aborted by the heartbeat, not hung
  assert time.monotonic() - start < 120
