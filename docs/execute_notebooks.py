"""Execute notebooks/*.ipynb and store the executed copies in docs/nb/.

The site renders docs/nb/*.ipynb as stored (``nb_execution_mode = "off"`` in
docs/conf.py), so that it shows the notebooks' printed numbers and plots
without running them at build time. The sources in notebooks/ stay without
outputs (the tests execute them); this script makes the copies:

    KERAS_BACKEND=jax python docs/execute_notebooks.py          # all of them
    KERAS_BACKEND=jax python docs/execute_notebooks.py quickstart_flax_nnx

Each notebook runs top to bottom on a Python 3 kernel of this interpreter,
with this checkout's optax_suite first on the path; any failing cell stops
the script and nothing is written for that notebook. Figures are inline PNGs
at 80 dpi (the notebooks save their own copies to a temporary directory).
Only the outputs and execution counts differ from the source:
tests/test_notebooks.py::test_site_copy_is_the_source_executed fails when
the cells drift apart, a copy is missing, or a figure is.
"""

import os
import pathlib
import sys
import tempfile

from nbclient import NotebookClient
import nbformat

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = ROOT / "notebooks"
OUT = ROOT / "docs" / "nb"
DPI = 80


def execute(source, out_dir=OUT):
  """Runs one notebook and writes its executed copy to out_dir."""
  nb = nbformat.read(source, as_version=4)
  with tempfile.TemporaryDirectory() as tmp:
    # Inline figures at 80 dpi (the notebooks save theirs at 80 dpi too): a
    # figure of 10 x 3.5 inches is an 800 x 280 PNG of about 40 kB.
    (pathlib.Path(tmp) / "matplotlibrc").write_text(f"figure.dpi: {DPI}\n")
    env = {
        "MATPLOTLIBRC": tmp,
        "KERAS_BACKEND": "jax",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "OPTAX_SUITE_FIGURES": str(pathlib.Path(tmp) / "figures"),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
      client = NotebookClient(nb, timeout=600, kernel_name="python3",
                              record_timing=False,
                              resources={"metadata": {"path": tmp}})
      client.execute()  # raises CellExecutionError on any failing cell
    finally:
      for k, v in saved.items():
        if v is None:
          os.environ.pop(k, None)
        else:
          os.environ[k] = v
  # Nothing machine-specific in the stored copy.
  nb.metadata.pop("widgets", None)
  nb.metadata["language_info"] = {"name": "python"}
  out_dir.mkdir(parents=True, exist_ok=True)
  target = out_dir / source.name
  nbformat.write(nb, target)
  return target


def main(argv):
  names = argv or sorted(p.stem for p in SOURCES.glob("*.ipynb"))
  for name in names:
    target = execute(SOURCES / f"{name}.ipynb")
    print(f"{target.relative_to(ROOT)}: {target.stat().st_size:,} bytes")


if __name__ == "__main__":
  main(sys.argv[1:])
