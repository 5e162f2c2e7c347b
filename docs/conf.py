"""Sphinx configuration of the optax_suite documentation site.

Build from the repository root (BUILD.md):
``python -m sphinx -W --keep-going -n -b html docs docs/_build/html``.
Nothing here touches the network: no intersphinx inventories are fetched and
the notebooks are rendered as committed in docs/nb/, outputs and plots
included, not executed (docs/execute_notebooks.py makes those copies; the
test suite executes the sources and checks the copies,
tests/test_notebooks.py).
"""

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document this checkout's package
os.environ.setdefault("KERAS_BACKEND", "jax")

import optax_suite  # noqa: E402

# The notebooks' sources live in notebooks/ (stored without outputs, executed
# by the tests); the site renders their executed copies in docs/nb/, made by
# docs/execute_notebooks.py and committed with their outputs and plots.

project = "optax_suite"
author = "The optax_suite authors"
copyright = "2026, The optax_suite authors"  # noqa: A001
release = optax_suite.__version__
version = release

extensions = [
    "myst_nb",  # MyST markdown pages and .ipynb notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # Google-style Args/Returns/Example sections
    "sphinx.ext.mathjax",  # the update rules' :math: and .. math::
]

exclude_patterns = ["_build", "**.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb",
                 ".ipynb": "myst-nb"}

# Notebooks: render what is committed; never execute at build time.
nb_execution_mode = "off"
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# autodoc: the public names as `optax_suite.NAME`, signatures as written.
autodoc_default_options = {"members": False}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
add_module_names = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

html_theme = "sphinx_book_theme"
html_title = f"optax_suite {release}"
html_theme_options = {"show_toc_level": 2}

# Nitpicky mode (-n) resolves every cross-reference. Types of other packages
# (jax, optax, chex, numpy, flax, keras) would need intersphinx inventories,
# i.e. the network at build time; they are left unresolved on purpose.
nitpick_ignore_regex = [
    (r"py:.*", r"(jax|jaxlib|optax|chex|numpy|np|jnp|flax|keras|re2)(\..*)?"),
    (r"py:.*", r"(typing|collections\.abc|types)\..*"),
    (r"py:class", r"(Any|Callable|Optional|Sequence|Mapping|Union|"
     r"NamedTuple|Iterable|Hashable|Tuple|Dict|List)"),
    (r"py:class", r"(optional|callable|pytree|PyTree|Array|ArrayTree)"),
    # The package's private aliases and helpers named in its annotations or
    # docstrings (they have no page: only public names do).
    (r"py:.*", r"(optax_suite\.)?_[A-Za-z_]+\..*"),
    (r"py:class", r"MaskOrFn"),
    (r"py:func", r"(descend_with_weight_decay|uses_newton_schulz|"
     r"newton_schulz)"),
]

# The factories' docstrings have a second argument section, "Base arguments
# (Keras's, same names and defaults):"; napoleon only knows a section header
# made of words, so the header is shortened before napoleon reads it.
BASE_HEADER = "Base arguments (Keras's, same names and defaults):"
napoleon_custom_sections = [("Base arguments", "params_style")]


def _base_arguments_header(app, what, name, obj, options, lines):
  del app, what, name, obj, options
  for i, line in enumerate(lines):
    if line.strip() == BASE_HEADER:
      lines[i] = line.replace(BASE_HEADER, "Base arguments:")


def setup(app):
  # Before napoleon's own handler (priority 500).
  app.connect("autodoc-process-docstring", _base_arguments_header,
              priority=400)
