"""Keras's base optimizer arguments as one frozen, validated value.

Every factory takes Keras's base arguments in its own explicit signature
and hands them on as one :class:`BaseOptions`; :func:`keras_optimizer
<optax_suite.keras_optimizer>` assembles the step from it. The checks run
once, in ``__post_init__``, so a value that exists is a valid one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

from optax_suite import _checks
from optax_suite import _numerics
from optax_suite._options import weight_decay as _weight_decay


@dataclasses.dataclass(frozen=True)
class BaseOptions:
  """Keras's base optimizer arguments, checked at construction.

  The fields are Keras's base arguments, with Keras's names and defaults,
  and the package's keyword-only ``exclude_from_weight_decay``,
  ``weight_decay_mask`` and ``lazy_rows`` (see :data:`BASE_DOC`).
  ``exclude_from_weight_decay`` is kept as a tuple, a copy of the list
  given, so that changing that list later changes nothing here.

  Example:
    >>> from optax_suite._base_options import BaseOptions
    >>> BaseOptions(clipnorm=1.0).clipnorm
    1.0
    >>> BaseOptions(clipnorm=1.0, clipvalue=0.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Only one of `clipnorm`, `clipvalue` and ... Received: ...
  """
  learning_rate: _numerics.ScalarOrSchedule = 0.001
  weight_decay: Optional[float] = None
  clipnorm: Optional[float] = None
  clipvalue: Optional[float] = None
  global_clipnorm: Optional[float] = None
  use_ema: bool = False
  ema_momentum: float = 0.99
  ema_overwrite_frequency: Optional[int] = None
  loss_scale_factor: Optional[float] = None
  gradient_accumulation_steps: Optional[int] = None
  exclude_from_weight_decay: Optional[Sequence[str]] = None  # kept: a tuple
  weight_decay_mask: Any = None
  lazy_rows: bool = False

  def __post_init__(self) -> None:
    _checks.check_learning_rate(self.learning_rate)
    for name in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm"):
      if getattr(self, name) is not None:
        _checks.check_non_negative(name, getattr(self, name))
    clips = (self.clipnorm, self.clipvalue, self.global_clipnorm)
    if sum(v is not None for v in clips) > 1:
      raise ValueError(
          "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be "
          f"set. Received: clipnorm={self.clipnorm}, "
          f"clipvalue={self.clipvalue}, "
          f"global_clipnorm={self.global_clipnorm}")
    _checks.check_flag("use_ema", self.use_ema)
    _checks.check_unit_interval("ema_momentum", self.ema_momentum,
                                closed_right=True)
    if self.ema_overwrite_frequency is not None:
      _checks.check_int_at_least(
          "ema_overwrite_frequency", self.ema_overwrite_frequency, 1)
    if self.gradient_accumulation_steps is not None:
      _checks.check_int_at_least(
          "gradient_accumulation_steps", self.gradient_accumulation_steps, 2)
    factor = self.loss_scale_factor
    if factor is not None:
      _checks.check_non_negative("loss_scale_factor", factor)
      if _checks.is_concrete(factor) and float(factor) == 0:
        raise ValueError(
            "`loss_scale_factor` must be > 0 or None. "
            f"Received: loss_scale_factor={factor!r}")
    # A list of RE2 patterns (not a string), kept as a tuple of its own.
    _weight_decay.check_exclusions(self.exclude_from_weight_decay)
    if self.exclude_from_weight_decay is not None:
      object.__setattr__(self, "exclude_from_weight_decay",
                         tuple(self.exclude_from_weight_decay))
    # weight_decay_mask: a tree of booleans or a callable (its structure is
    # checked against the parameters at `update`).
    _weight_decay.check_mask(self.weight_decay_mask)
    if not isinstance(self.lazy_rows, bool):
      raise ValueError(
          "`lazy_rows` must be True or False. "
          f"Received: lazy_rows={self.lazy_rows!r}")

  def config(self) -> dict:
    """The factory keyword arguments these options were given, as a config
    keeps them (``exclude_from_weight_decay`` as a new list)."""
    config = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    if self.exclude_from_weight_decay is not None:
      config["exclude_from_weight_decay"] = list(
          self.exclude_from_weight_decay)
    return config

  def without_weight_decay(self) -> "BaseOptions":
    """These options with the base weight decay off, for a rule that decays
    the weights itself (Muon: one rate per branch)."""
    return dataclasses.replace(self, weight_decay=None,
                               exclude_from_weight_decay=None,
                               weight_decay_mask=None)


BASE_DOC = """
  Base arguments (Keras's, same names and defaults):
    weight_decay: decoupled decay ``w -= w * weight_decay * lr`` before the
      update, or None.
    clipnorm: clip each gradient leaf to this L2 norm, or None.
    clipvalue: clip each gradient element to ``[-clipvalue, clipvalue]``.
    global_clipnorm: clip all gradients to this global norm; a non-finite
      norm makes every gradient NaN, as in Keras. At most one of the three.
    use_ema: keep an exponential moving average of the parameters.
    ema_momentum: momentum of that average, in [0, 1].
    ema_overwrite_frequency: overwrite the parameters with the average every
      this many update steps, or None.
    loss_scale_factor: static loss scale; gradients are divided by it. The
      value divided by is this argument (or, injected, its current value in
      ``state.hyperparams``) at every ``update``, as Keras reads its
      attribute at every ``apply``; a restored checkpoint does not override
      it. The state keeps a copy for :func:`scale_loss`, refreshed by each
      ``update``.
    gradient_accumulation_steps: update every this many calls with the mean
      gradient (an integer >= 2), or None.
    name: kept in the config; it has no effect on the numbers.
    exclude_from_weight_decay: keyword-only; regular expressions, each
      searched (``re.search``) in a leaf's own name, the last key of its
      path, as Keras searches ``variable.name``: ``["^bias$"]`` excludes
      every leaf named ``bias``. A pattern prefixed ``"path:"`` is searched
      in the whole path instead, keys joined with ``"/"`` as in Keras's
      ``variable.path`` (``"path:^encoder/"`` excludes a sub-module).
    weight_decay_mask: keyword-only; tree of booleans or callable
      ``params -> tree``, True means decay.
    lazy_rows: keyword-only; tf.keras's sparse updates for row-sparse
      gradients (below).

  A gradient leaf may be a row-sparse ``jax.experimental.sparse.BCOO``
  (``n_batch=0, n_sparse=1``: indices ``[nnz, 1]``, data ``[nnz, *shape[1:]]``,
  whole rows along axis 0 of a leaf of rank 2 or more; rows may repeat and
  are summed). By default it gives Keras 3's numbers, which
  are those of the dense sum. With ``lazy_rows=True`` only the touched rows
  of the parameter and of its slots move, exactly as the dense rule would
  move a variable made of those rows (step counts stay global), and
  ``update`` returns a row-sparse update (apply it with
  ``ox.apply_updates`` or ``ox.apply``). The base options act on those rows:
  weight decay decays only touched rows; ``clipnorm`` / ``global_clipnorm``
  take norms over the summed rows (the same norms as of the dense sum);
  the EMA averages and overwrites only touched rows; accumulation sums rows
  into a dense accumulator and, on the update call, moves every row touched
  during the cycle (see ``ox.accumulate_rows``); a static loss scale divides
  the rows, and under ``ox.loss_scale_optimizer`` a non-finite value in any
  row skips the whole step. Dense leaves behave as always.

  ``learning_rate`` is a number, a schedule ``step -> lr`` (optax's, ours, or a
  Keras ``LearningRateSchedule``; it sees every call, as in Keras), or a
  zero-argument callable, which is called on each ``update`` and so, under
  ``jax.jit``, once at trace time. Every number may also be injected with
  ``optax.inject_hyperparams``. ``update`` needs ``params`` when weight decay
  or EMA is on.
"""


def with_base_doc(factory):
  """Fills the ``{base}`` line of a factory's docstring (absent under -OO)."""
  if factory.__doc__:
    factory.__doc__ = factory.__doc__.replace(
        "  {base}", BASE_DOC.rstrip("\n"))
  return factory


