"""Keras 3 learning-rate schedules as optax schedules.

Snake-case factories with the argument names, order and defaults of the
classes in ``keras.optimizers.schedules``; each returns a frozen, hashable
``step -> float32`` callable that optax accepts as a learning rate, plus
:func:`serialize` and :func:`from_config` for Keras-compatible configs.

Example:

>>> from optax_suite import schedules
>>> sched = schedules.exponential_decay(0.1, decay_steps=100, decay_rate=0.5)
>>> sched(100).item()  # the float32 value, exactly
0.05000000074505806
>>> schedules.from_config(schedules.serialize(sched)) == sched
True
"""

# pylint: disable=wildcard-import,unused-wildcard-import
from optax_suite._schedules import *  # noqa: F401,F403
from optax_suite._schedules import __all__  # noqa: F401
