"""Prints optax_suite's import graph by layer, and what breaks the layering.

    python benchmarks/import_graph.py          # the graph and the violations
    python benchmarks/import_graph.py --check  # exit 1 on any violation

Read statically (``ast``), so nothing is imported. Each module belongs to the
first layer whose prefix it starts with; a module may import its own layer
and the layers below. Two kinds of violation are printed:

- ``upward``: a module imports one of a higher layer;
- ``private``: a module reads another module's private name
  (``_sparse._row_ids``), whatever the layers.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import sys

PACKAGE = "optax_suite"
# Lowest first: (layer name, module prefixes).
LAYERS = (
    ("checks and trees", ("_checks", "_trees", "_numerics", "_patterns",
                          "_common")),
    ("options", ("_options",)),
    ("rules", ("_rules",)),
    ("keras step order", ("_optimizer", "_base_options")),
    ("factories", ("_factories",)),
    ("wrappers", ("_wrappers",)),
    ("schedules", ("_schedules",)),
    ("interop", ("_interop",)),
    ("public", ("__init__", "schedules", "__main__")),
)


def layer_of(module: str) -> int:
  head = module.split(".")[1] if "." in module else "__init__"
  for i, (_, prefixes) in enumerate(LAYERS):
    if head in prefixes:
      return i
  raise SystemExit(f"{module}: in no layer; add it to LAYERS")


def modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
  found = {}
  for path in sorted((root / PACKAGE).rglob("*.py")):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
      parts = parts[:-1]
    found[".".join(parts)] = path
  return found


def imports(path: pathlib.Path, known: set[str]):
  """(imported module, {alias: module}) of one file, package-internal only."""
  tree = ast.parse(path.read_text())
  edges, aliases = set(), {}
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and (
        node.module == PACKAGE or node.module.startswith(PACKAGE + ".")):
      for name in node.names:
        target = f"{node.module}.{name.name}"
        module = target if target in known else node.module
        edges.add(module)
        if target in known:
          aliases[name.asname or name.name] = target
    elif isinstance(node, ast.Import):
      for name in node.names:
        if name.name.startswith(PACKAGE):
          edges.add(name.name)
  return tree, edges, aliases


def private_reads(tree: ast.AST, aliases: dict[str, str]):
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
        and node.value.id in aliases and node.attr.startswith("_")
        and not node.attr.startswith("__")):
      yield aliases[node.value.id], node.attr, node.lineno


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default=str(
      pathlib.Path(__file__).resolve().parent.parent))
  parser.add_argument("--check", action="store_true")
  args = parser.parse_args()
  found = modules(pathlib.Path(args.root))
  known = set(found)
  violations = []
  by_layer: dict[int, list[str]] = {}
  for module, path in found.items():
    if module == PACKAGE:
      by_layer.setdefault(len(LAYERS) - 1, []).append(module)
      continue
    tree, edges, aliases = imports(path, known)
    own = layer_of(module)
    by_layer.setdefault(own, []).append(module)
    targets = sorted(e for e in edges if e != module and e != PACKAGE)
    for target in targets:
      if layer_of(target) > own:
        violations.append(f"upward   {module} -> {target} "
                          f"({LAYERS[own][0]} -> {LAYERS[layer_of(target)][0]})")
    for target, attr, line in private_reads(tree, aliases):
      if target != module:
        violations.append(f"private  {module}:{line} reads {target}.{attr}")
    found[module] = targets  # type: ignore[assignment]
  for i, (name, _) in enumerate(LAYERS):
    print(f"[{i}] {name}")
    for module in sorted(by_layer.get(i, [])):
      if module == PACKAGE:
        continue
      deps = ", ".join(t.removeprefix(PACKAGE + ".") for t in found[module])
      print(f"    {module.removeprefix(PACKAGE + '.')} <- {deps or '-'}")
  print(f"\n{len(violations)} violation(s)")
  for v in violations:
    print("  " + v)
  return 1 if (args.check and violations) else 0


if __name__ == "__main__":
  sys.exit(main())
