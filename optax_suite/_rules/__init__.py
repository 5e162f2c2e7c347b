"""The update rules, one module each.

Each module holds a ``scale_by_<rule>`` transformation, its typed state, the
factory with Keras's signature built on it, and its ``KERAS`` spec (Keras
class name, config keys, slot layout). ``REGISTRY`` maps each Keras class
name to its spec; configs and Keras state import read it, so a new rule is
registered by adding its module here.
"""

from optax_suite._rules import adadelta
from optax_suite._rules import adafactor
from optax_suite._rules import adagrad
from optax_suite._rules import adam
from optax_suite._rules import adamax
from optax_suite._rules import adamw
from optax_suite._rules import ftrl
from optax_suite._rules import lamb
from optax_suite._rules import lion
from optax_suite._rules import muon
from optax_suite._rules import nadam
from optax_suite._rules import rmsprop
from optax_suite._rules import schedule_free_adamw
from optax_suite._rules import sgd

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
