"""The factories, one module each: Keras's signatures over the rules.

Each module holds the factory with Keras's signature (its own arguments,
then Keras's base arguments, which it hands on as one
:class:`~optax_suite._base_options.BaseOptions`) and its ``KERAS`` spec
(Keras class name, config keys, slot layout). ``REGISTRY`` maps each Keras
class name to its spec; configs and Keras state import read it, so a new
optimizer is registered by adding its module here.
"""

from optax_suite._factories import adadelta
from optax_suite._factories import adafactor
from optax_suite._factories import adagrad
from optax_suite._factories import adam
from optax_suite._factories import adamax
from optax_suite._factories import adamw
from optax_suite._factories import ftrl
from optax_suite._factories import lamb
from optax_suite._factories import lion
from optax_suite._factories import muon
from optax_suite._factories import nadam
from optax_suite._factories import rmsprop
from optax_suite._factories import schedule_free_adamw
from optax_suite._factories import sgd

REGISTRY = {m.KERAS.class_name: m.KERAS for m in (
    adadelta,
    adagrad,
    adam,
    adamax,
    adamw,
    lion,
    muon,
    lamb,
    nadam,
    adafactor,
    ftrl,
    rmsprop,
    schedule_free_adamw,
    sgd,
)}
