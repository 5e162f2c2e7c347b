"""User regular expressions, matched by RE2 in time linear in the text.

Weight-decay exclusions, Muon's ``exclude_layers`` and ``OptimizerMap`` keys
come from configs, which may be careless or hostile. Python's ``re``
backtracks, so a pattern such as ``"(.|.)*$x"`` takes exponential time in the
path length and hangs ``update``. RE2 (``google-re2``) never backtracks; its
search has Python's ``re.search`` semantics for ordinary patterns, and it
refuses the constructs it cannot run in linear time (backreferences,
lookaround), which are refused here at construction.
"""

from __future__ import annotations

import functools
from typing import Any

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # The error is raised, not also printed by C++.


def compile_pattern(pattern: str, argument: str, received: Any) -> Any:
  """`pattern` compiled by RE2, or a ValueError naming `argument`.

  ``received`` is the argument's value, shown as Keras-style messages show it.
  """
  try:
    return re2.compile(pattern, _OPTIONS)
  except re2.error as e:
    reason = e.args[0].decode() if e.args and isinstance(
        e.args[0], bytes) else str(e)
    raise ValueError(
        f"`{argument}` holds an invalid or unsupported regular expression "
        f"{pattern!r} ({reason}; backreferences and lookaround are not "
        f"supported, matching runs in linear time). "
        f"Received: {argument}={received!r}") from None


@functools.lru_cache(maxsize=256)
def compiled(pattern: str, argument: str) -> Any:
  """`compile_pattern`, once per pattern (for the matching at each update)."""
  return compile_pattern(pattern, argument, pattern)


def check_patterns(patterns: Any, argument: str) -> None:
  """A ValueError naming `argument` for a pattern RE2 cannot compile."""
  for pattern in patterns or ():
    compile_pattern(pattern, argument, patterns)
