r"""Keras 3 learning-rate schedules as optax ``step -> lr`` functions.

Each factory in this module (:func:`exponential_decay`,
:func:`piecewise_constant_decay`, :func:`polynomial_decay`,
:func:`inverse_time_decay`, :func:`cosine_decay` and
:func:`cosine_decay_restarts`) takes the same arguments, in the same order and
with the same defaults, as the matching class in
``keras.optimizers.schedules``, and returns a small frozen dataclass (an
implementation detail; the factories are the one public form).  The returned
schedule is

* an optax schedule: calling it with a step (a Python ``int`` or a possibly
  traced integer array) returns the learning rate as a ``float32`` array, so it
  can be passed wherever optax accepts ``learning_rate`` and works under
  :func:`jax.jit`, :func:`jax.vmap` and :func:`optax.inject_hyperparams`;
* hashable, so it can be a static argument of a jitted function;
* serialisable: its ``get_config()`` returns exactly the config dict
  Keras's ``get_config`` returns, :func:`serialize` returns the dict
  ``keras.optimizers.schedules.serialize`` returns, and :func:`from_config`
  accepts either form (including dicts produced by Keras itself).

The numbers follow Keras's ``float32`` computation operation by operation
(same operations, same order), so they agree with Keras to ``float32``
rounding; evaluated eagerly they are bit-identical.  Deliberate differences:

* Keras computes in the dtype of ``initial_learning_rate`` (of ``values[0]``
  for the piecewise schedule), so a Python ``int`` there makes Keras cast the
  other arguments, and even pi, to ``int32`` (``0.5 -> 0``, ``pi -> 3``).
  These schedules always compute and return ``float32``, i.e. give Keras's
  numbers for the same arguments written as floats.
* For an array of steps (or :func:`jax.vmap` over steps), XLA's vectorised
  float32 division on CPU is not correctly rounded, which can put a staircase
  or cycle boundary on the wrong step; a step that is an exact multiple of
  the period is divided exactly here, as a scalar step is in Keras.
* :func:`polynomial_decay` never returns NaN where a rounding error would
  push ``1 - t / T`` below zero under a fractional power; Keras would.

Example:

>>> import optax
>>> from optax_suite import schedules
>>> sched = schedules.cosine_decay(0.1, decay_steps=100)
>>> opt = optax.sgd(learning_rate=sched)
>>> sched(50).item()  # the float32 value, exactly
0.04999999701976776

Layout: ``_maths`` (the float32 arithmetic), ``_factories`` (the factories,
their argument checks and the dataclasses they return), ``_config``
(:func:`serialize`, :func:`from_config`).
"""

from optax_suite._schedules._config import from_config
from optax_suite._schedules._config import serialize
from optax_suite._schedules._factories import cosine_decay
from optax_suite._schedules._factories import cosine_decay_restarts
from optax_suite._schedules._factories import exponential_decay
from optax_suite._schedules._factories import inverse_time_decay
from optax_suite._schedules._factories import piecewise_constant_decay
from optax_suite._schedules._factories import polynomial_decay

# The base of every schedule dataclass, for the package's own isinstance
# checks (not in __all__).
from optax_suite._schedules._factories import Schedule as Schedule

__all__ = [
    "cosine_decay",
    "cosine_decay_restarts",
    "exponential_decay",
    "from_config",
    "inverse_time_decay",
    "piecewise_constant_decay",
    "polynomial_decay",
    "serialize",
]
