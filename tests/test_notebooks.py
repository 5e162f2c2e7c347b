"""The notebooks in notebooks/ run from a clean checkout and draw their plots.

Each notebook is executed top to bottom with nbclient on a Python 3 kernel of
the interpreter running the tests; any cell error (including the notebooks'
own asserts on the numbers they show) fails the test. A notebook passes only
if its figures were both displayed (an image/png output) and saved as PNG
files in the directory named by OPTAX_SUITE_FIGURES. The notebooks are kept
in git with their outputs cleared, which is checked too.

The site renders executed copies, docs/nb/*.ipynb, written by
docs/execute_notebooks.py and committed with their outputs: each must exist,
hold its source's cells unchanged (only outputs and execution counts added),
show every figure as a PNG and no error, and stay small.
"""

import base64
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SITE_COPIES = ROOT / "docs" / "nb"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# notebook -> the figures it must save.
EXPECTED = {
    "quickstart_flax_nnx.ipynb": ["quickstart_nnx.png"],
    "porting_from_keras.ipynb": ["porting_from_keras_curves.png",
                                 "porting_from_keras_epsilon.png",
                                 "porting_from_keras_learning_rate.png"],
    "ema_accumulation_loss_scaling.ipynb": ["ema_parameters.png",
                                            "accumulation_noise.png",
                                            "loss_scale.png"],
}


def test_every_notebook_is_covered():
  assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)
  assert sorted(p.name for p in SITE_COPIES.glob("*.ipynb")) == sorted(
      EXPECTED), "regenerate with docs/execute_notebooks.py"


def png_outputs(nb):
  return [out for cell in nb.cells if cell.cell_type == "code"
          for out in cell.outputs if "image/png" in out.get("data", {})]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_site_copy_is_the_source_executed(name):
  """docs/nb/NAME is notebooks/NAME run top to bottom: the same cells, in
  the same order, every code cell executed without error, every figure an
  inline PNG. A source edited without rerunning docs/execute_notebooks.py
  fails here."""
  source = nbformat.read(NOTEBOOKS / name, as_version=4)
  copy = nbformat.read(SITE_COPIES / name, as_version=4)
  nbformat.validate(copy)
  assert [(c.cell_type, c.source) for c in copy.cells] == [
      (c.cell_type, c.source) for c in source.cells], (
          f"docs/nb/{name} differs from notebooks/{name}: run "
          "docs/execute_notebooks.py")
  code = [c for c in copy.cells if c.cell_type == "code"]
  assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
  for cell in code:
    assert not [o for o in cell.outputs if o.output_type == "error"], (
        cell.source)
  images = png_outputs(copy)
  assert len(images) == len(EXPECTED[name])
  for out in images:
    data = base64.b64decode(out["data"]["image/png"])
    assert data.startswith(PNG_MAGIC) and 10_000 < len(data) < 150_000
  assert (SITE_COPIES / name).stat().st_size < 400_000


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_is_stored_without_outputs(name):
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_and_plots(name, tmp_path, monkeypatch):
  figures = tmp_path / "figures"
  monkeypatch.setenv("OPTAX_SUITE_FIGURES", str(figures))
  monkeypatch.setenv("KERAS_BACKEND", "jax")
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  # "python3" is ipykernel's native kernel: jupyter_client starts it with
  # the interpreter running this test, so the venv's packages are used.
  client = NotebookClient(nb, timeout=180, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # raises CellExecutionError on any failing cell

  images = png_outputs(nb)
  assert len(images) == len(EXPECTED[name])
  for fig in EXPECTED[name]:
    data = (figures / fig).read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000
