"""The documentation site lists every public name and renders its examples.

The API reference (docs/api/*.rst) is an explicit list of autodoc entries,
grouped by concern. These tests read that list: every name in
`optax_suite.__all__` and `optax_suite.schedules.__all__` must have exactly
one entry, and every entry must be a public name. A new public name fails
here, named, until it is given a place in one of the pages.

The rendered site is checked too (slow: it runs Sphinx, or reads the HTML
that .ci/run has just built, given in $OPTAX_SUITE_DOCS_HTML): every
example of every entry's docstring, which the doctests run, is on its page.
"""

import doctest
import html
import os
import pathlib
import re
import subprocess
import sys

import pytest

import optax_suite as ox
from optax_suite import schedules

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
API = DOCS / "api"
ENTRY = re.compile(
    r"^\.\. auto(function|class|module|data|exception)::\s+(\S+)\s*$", re.M)


def api_entries():
  """(page, directive, dotted name) of every autodoc entry of the API pages."""
  entries = []
  for page in sorted(API.glob("*.rst")):
    for kind, name in ENTRY.findall(page.read_text()):
      entries.append((page.stem, kind, name))
  return entries


def public_names():
  """The dotted name each public name is documented under."""
  names = {f"optax_suite.{n}" for n in ox.__all__}
  names |= {f"optax_suite.schedules.{n}" for n in schedules.__all__}
  return names


def resolve(dotted):
  obj = sys.modules["optax_suite"]
  for part in dotted.split(".")[1:]:
    obj = getattr(obj, part)
  return obj


def own_doc(obj):
  return vars(obj).get("__doc__") if isinstance(obj, type) else obj.__doc__


def test_api_pages_exist_and_are_in_the_toctree():
  pages = sorted(p.stem for p in API.glob("*.rst") if p.stem != "index")
  assert pages == sorted(["rules", "options", "wrappers", "interop",
                          "schedules"]), pages
  index = (API / "index.rst").read_text()
  for page in pages:
    assert re.search(rf"^   {page}$", index, re.M), page


def test_every_public_name_has_an_api_entry():
  documented = {name for _, _, name in api_entries()}
  missing = sorted(public_names() - documented)
  assert not missing, (
      f"public names with no entry in docs/api/*.rst: {missing}; add an "
      "`.. autofunction:: optax_suite.NAME` (or autoclass) to the page of "
      "its concern")


def test_every_api_entry_is_a_public_name_documented_once():
  entries = api_entries()
  names = [name for _, _, name in entries]
  not_public = sorted(set(names) - public_names())
  assert not not_public, f"entries that are not public names: {not_public}"
  twice = sorted({n for n in names if names.count(n) > 1})
  assert not twice, f"names with more than one entry: {twice}"


def test_entry_directive_fits_the_object():
  """A class under autoclass, a function under autofunction, the schedules
  module under automodule: autodoc would render a wrong one oddly."""
  for page, kind, name in api_entries():
    obj = resolve(name)
    if kind == "class":
      assert isinstance(obj, type), (page, name)
    elif kind == "function":
      assert callable(obj) and not isinstance(obj, type), (page, name)
    elif kind == "module":
      assert type(obj).__name__ == "module", (page, name)


def test_every_entry_has_an_example_to_render():
  """What the site renders is the object's own docstring: each has a `>>>`
  example (the same text the doctests run)."""
  for _, _, name in api_entries():
    doc = own_doc(resolve(name))
    assert doc and doctest.DocTestParser().get_examples(doc), name


def test_guides_are_globbed_and_titled():
  """Pages other work adds as docs/guides/<topic>.md are in the site without
  an edit: the guides toctree ends with a glob; each starts with a title."""
  index = (DOCS / "index.md").read_text()
  assert re.search(r":glob:\n(.*\n)*?guides/\*\n```", index), index
  guides = sorted((DOCS / "guides").glob("*.md"))
  assert len(guides) >= 12
  for guide in guides:
    assert guide.read_text().startswith("# "), guide.name


@pytest.fixture(scope="module")
def built_html(tmp_path_factory):
  given = os.environ.get("OPTAX_SUITE_DOCS_HTML")
  if given:
    return pathlib.Path(given)
  pytest.importorskip("sphinx")
  pytest.importorskip("myst_nb")
  pytest.importorskip("sphinx_book_theme")
  out = tmp_path_factory.mktemp("html")
  done = subprocess.run(
      [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q",
       "-b", "html", "-d", str(out / ".doctrees"), str(DOCS), str(out)],
      cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
  assert done.returncode == 0, done.stdout + done.stderr
  return out


def page_text(path):
  text = re.sub(r"<[^>]+>", "", path.read_text())
  return html.unescape(text)


@pytest.mark.slow
def test_rendered_api_pages_show_every_example(built_html):
  """Each entry's page shows its signature and the source of each of its
  docstring examples, as the doctests run them (one line of source each:
  the first, prompt included)."""
  texts = {}
  for page, _, name in api_entries():
    if page not in texts:
      texts[page] = page_text(built_html / "api" / f"{page}.html")
    text = texts[page]
    obj = resolve(name)
    assert name.rsplit(".", 1)[1] in text, (page, name)
    for example in doctest.DocTestParser().get_examples(own_doc(obj)):
      first = ">>> " + example.source.splitlines()[0]
      assert first in text, (page, name, first)


@pytest.mark.slow
def test_rendered_site_has_every_guide_and_notebook(built_html):
  for guide in (DOCS / "guides").glob("*.md"):
    assert (built_html / "guides" / f"{guide.stem}.html").exists(), guide
  for nb in (ROOT / "notebooks").glob("*.ipynb"):
    page = built_html / "nb" / f"{nb.stem}.html"
    assert page.exists(), nb
    # Rendered from the executed copy in docs/nb/: its plots are on the page.
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', page.read_text())
    assert images, f"{page.name} shows no plot"
    for src in images:
      assert (page.parent / src).resolve().is_file(), (page.name, src)
  bench = page_text(built_html / "benchmarks.html")
  for table in (ROOT / "benchmarks").glob("*.md"):
    title = table.read_text().splitlines()[0].lstrip("# ").strip()
    assert title in bench, table.name
