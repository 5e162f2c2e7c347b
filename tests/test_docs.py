"""Every public name is documented with a runnable example, and listed.

The examples themselves run as doctests (pytest's --doctest-modules, set in
pyproject.toml, collects the optax_suite package). This module checks that
none is missing: each name in `optax_suite.__all__` has a docstring with a
`>>>` example that pytest will collect, and the README's API overview lists
exactly the public names, each in the group of the layer it comes from.

The README is the front page: what the package is, the set-up commands, a
quick start, then guides and the API overview pointing into docs/. What it
used to hold has moved there; `MOVED` says where, and the tests below fail
if a moved text is no longer in its page.
"""

import doctest
import inspect
import pathlib
import re
import subprocess
import sys

import pytest

import optax_suite as ox

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
API_ENTRY = re.compile(
    r"^\.\. auto(?:function|class|module|data|exception)::\s+(\S+)\s*$", re.M)

# The group of the README's API overview each layer of the package goes in
# (BUILD.md, "Layout"): a public name's group is that of the module defining
# it.
GROUP_OF_LAYER = {
    "_factories": "Optimizers", "_optimizer": "Optimizers",
    "_rules": "Rules", "_options": "Options", "_wrappers": "Wrappers",
    "_interop": "Interop", "schedules": "Schedules",
}

# Where each section of the README before it became the front page (commit
# OLD_README) went: (its heading, the docs/ page, a sentence of the section
# that page holds). "" is the untitled introduction.
OLD_README = "267785b"
MOVED = [
    ("", "index.md",
     "Same keyword arguments, same defaults, same numbers as Keras 3"),
    ("", "guides/porting_from_keras.md",
     "A training loop moved from Keras to JAX with optax's optimizers gets a "
     "different curve; with optax_suite it gets the same one."),
    ("Set up and run", "getting_started.md",
     "each command makes its own virtualenv"),
    ("Quick start", "getting_started.md",
     "params = ox.finalize_variable_values(params, state)"),
    ("Quick start", "guides/accumulation.md",
     "It takes and returns one `(params, state)` pair, so that JAX pairs each "
     "donated buffer with its own output"),
    ("Quick start", "getting_started.md",
     "Every piece is also a transformation of its own, to chain with optax"),
    ("Embedding tables: row-sparse gradients, lazy rows",
     "guides/embeddings.md",
     "with `lazy_rows=True` only the touched rows of the table and of its "
     "slots move"),
    ("Excluding parameters from weight decay", "guides/base_options.md",
     "To exclude by where a leaf sits, prefix a pattern with `path:`"),
    ("Where it differs from Keras, on purpose", "guides/keras_differences.md",
     "The differences are deliberate"),
    ("MultiSteps or gradient_accumulation_steps?", "guides/accumulation.md",
     "use `MultiSteps` only if you want its semantics"),
    ("Muon: which leaves are orthogonalized", "guides/muon.md",
     "A rank-2 leaf takes the Newton-Schulz step unless"),
    ("Several optimizers by path: `multi_optimizer`",
     "guides/multi_optimizer.md",
     "a leaf's path (its key path joined with `\"/\"`) is looked up as an "
     "exact key first"),
    ("Schedules, injected hyperparameters and configs",
     "guides/schedules_and_configs.md",
     "Numbers can be changed between jitted steps without recompiling."),
    ("API", "api/index.rst", "Every public name in one line, by concern"),
]


def squeeze(text):
  return re.sub(r"\s+", " ", text)


def section(text, heading):
  """The text under `## heading`, up to the next `## ` heading."""
  assert f"\n## {heading}\n" in text, heading
  return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def group_of(name):
  obj = getattr(ox, name)
  module = obj.__name__ if inspect.ismodule(obj) else obj.__module__
  return GROUP_OF_LAYER[module.split(".")[1]]


@pytest.mark.parametrize("name", sorted(ox.__all__))
def test_public_name_has_a_docstring_with_an_example(name):
  obj = getattr(ox, name)
  # Its own docstring: `inspect.getdoc` would fall back to a base class's.
  doc = vars(obj).get("__doc__") if isinstance(obj, type) else obj.__doc__
  assert doc, f"{name} has no docstring of its own"
  examples = doctest.DocTestParser().get_examples(doc)
  assert examples, f"{name}'s docstring has no >>> example"
  # --doctest-modules collects exactly what DocTestFinder finds in the
  # defining module: this docstring must be among those tests, so that its
  # example is run.
  module = obj if inspect.ismodule(obj) else sys.modules[obj.__module__]
  assert module.__name__.startswith("optax_suite")
  found = doctest.DocTestFinder().find(module)
  assert any(t.docstring == doc and t.examples for t in found), (
      f"{name}'s example is not collected from {module.__name__}")


def readme_api_rows():
  """{group: (the names its row lists, the docs/api pages it links)}."""
  rows = {}
  for line in section(README.read_text(), "API").splitlines():
    match = re.match(r"^\| \*\*(\w+)\*\*[^|]*\|([^|]*)\|([^|]*)\|$", line)
    if match:
      group, names, links = match.groups()
      assert group not in rows, group
      rows[group] = (re.findall(r"`([A-Za-z_][\w.]*)`", names),
                     re.findall(r"\]\(docs/api/(\w+)\.rst\)", links))
  return rows


def test_readme_api_overview_lists_every_public_name_in_its_group():
  rows = readme_api_rows()
  assert sorted(rows) == sorted(set(GROUP_OF_LAYER.values()))
  listed = [n for names, _ in rows.values() for n in names if "." not in n]
  assert sorted(listed) == sorted(ox.__all__), "each public name once"
  wrong = sorted((n, g, group_of(n)) for g, (names, _) in rows.items()
                 for n in names if "." not in n and group_of(n) != g)
  assert not wrong, f"(name, row, group of its module): {wrong}"
  scheduled = sorted(n for g, (names, _) in rows.items() for n in names
                     if "." in n and g == "Schedules")
  assert scheduled == sorted(f"schedules.{n}" for n in ox.schedules.__all__)
  assert all("." not in n or g == "Schedules"
             for g, (names, _) in rows.items() for n in names)


def test_readme_api_rows_link_the_pages_documenting_their_names():
  """Each row links every docs/api page with an entry for one of its names
  (derived from the pages' autodoc entries), and only existing pages."""
  page_of = {}
  for page in (DOCS / "api").glob("*.rst"):
    for dotted in API_ENTRY.findall(page.read_text()):
      page_of[dotted.removeprefix("optax_suite.")] = page.stem
  for group, (names, links) in readme_api_rows().items():
    assert links, group
    assert all((DOCS / "api" / f"{p}.rst").exists() for p in links), links
    needed = {page_of[n] for n in names}
    assert needed <= set(links), (group, sorted(needed - set(links)))


def test_readme_links_resolve_and_reach_every_guide():
  text = README.read_text()
  targets = re.findall(r"\]\(((?!https?:)[^)#]+)(?:#[^)]*)?\)", text)
  missing = sorted(t for t in targets if not (ROOT / t).exists())
  assert not missing, missing
  linked = {pathlib.PurePosixPath(t) for t in targets}
  guides = sorted((DOCS / "guides").glob("*.md"))
  unlinked = [g.name for g in guides
              if pathlib.PurePosixPath(g.relative_to(ROOT).as_posix())
              not in linked]
  assert not unlinked, f"guides the README's table does not link: {unlinked}"
  assert pathlib.PurePosixPath("docs/getting_started.md") in linked


def test_readme_commands_and_quick_start_are_the_getting_started_ones():
  """The set-up commands, the quick-start loop and the Flax NNX and Equinox
  loops are the same text on the front page and in the getting-started page
  (whose Equinox loop tests/test_integrations.py runs)."""
  readme = README.read_text()
  started = (DOCS / "getting_started.md").read_text()
  for heading, lang, count in (("Set up and run", "bash", 1),
                               ("Quick start", "python", 1),
                               ("Other frameworks", "python", 2)):
    blocks = re.findall(rf"```{lang}\n(.*?)```", section(readme, heading),
                        re.S)
    assert len(blocks) == count, heading
    for block in blocks:  # The getting-started loops are the tested ones.
      assert block in started, (heading, block)


@pytest.mark.parametrize("heading,page,sentence", MOVED,
                         ids=[f"{h or 'introduction'}->{p}"
                              for h, p, _ in MOVED])
def test_old_readme_section_has_a_home_in_docs(heading, page, sentence):
  text = squeeze((DOCS / page).read_text())
  assert squeeze(sentence) in text, (
      f"the README's {heading or 'introduction'!r} moved to docs/{page}, "
      f"which no longer says: {sentence!r}")


def test_every_old_readme_section_is_in_moved():
  """The headings of the README before it became the front page, read from
  git: each must have a row in MOVED. Skipped outside a git checkout with
  that commit (a shallow clone, an sdist)."""
  try:
    old = subprocess.run(["git", "show", f"{OLD_README}:README.md"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60,
                         check=False)
  except OSError:
    pytest.skip("no git")
  if old.returncode != 0:
    pytest.skip(f"commit {OLD_README} is not in this checkout")
  prose = re.sub(r"```.*?```", "", old.stdout, flags=re.S)
  headings = re.findall(r"^#{2,3} (.+)$", prose, re.M)
  assert len(headings) >= 10, headings
  assert sorted(headings) == sorted({h for h, _, _ in MOVED if h})


@pytest.mark.slow
def test_imports_with_docstrings_stripped():
  """`python -OO` strips docstrings; the factories' docstrings are filled in
  at import time, which must not fail without them (issue 9 item 3)."""
  root = pathlib.Path(__file__).resolve().parent.parent
  out = subprocess.run(
      [sys.executable, "-OO", "-c",
       "import optax_suite as ox; assert ox.adam.__doc__ is None; "
       "print(len(ox.__all__))"],
      cwd=root, capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr
  assert int(out.stdout) == len(ox.__all__)


def test_all_is_sorted_and_names_each_export_once():
  """``__all__`` is sorted (a reader finds a name by bisection) and holds
  no name twice; every name in it is an attribute of the package."""
  assert list(ox.__all__) == sorted(ox.__all__)
  assert len(set(ox.__all__)) == len(ox.__all__)
  assert all(hasattr(ox, name) for name in ox.__all__)
