"""Every optimizer the package ships, as the tests see it: one entry each.

A new optimizer is covered by the parity, contract, sharding and sweep tests
by adding its entry here (and its factory to the package).

Each entry names the Keras class, the learning rate at which the base-option
parity tests run it (one at which 28 steps move the parameters visibly),
lists of its own arguments away from their defaults, and draws random own
arguments for the random-configuration tests and ``keras_sweep.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Entry:
  keras_class: str
  # Learning rate for the base-option parity runs (None: Keras's default).
  parity_learning_rate: Any = None
  # Own arguments away from their defaults, one parity run each.
  own: tuple = ()
  # rng -> own keyword arguments, for random configurations.
  random_own: Callable[[Any], dict] = lambda rng: {}
  # Learning rates the random configurations draw from.
  learning_rates: tuple = (1e-3, 0.01, 0.05)


def _adam_like(rng):
  return dict(beta_1=float(rng.choice([0.0, 0.5, 0.9])),
              beta_2=float(rng.choice([0.9, 0.99, 0.999])),
              epsilon=float(rng.choice([1e-7, 1e-5, 1e-3])))


CATALOG: dict[str, Entry] = {
    "adam": Entry(
        "Adam",
        own=(dict(learning_rate=0.01), dict(amsgrad=True, learning_rate=0.02),
             dict(beta_1=0.5, beta_2=0.9, epsilon=1e-3)),
        random_own=lambda rng: dict(_adam_like(rng),
                                    amsgrad=bool(rng.random() < 0.5))),
    "adamax": Entry(
        "Adamax",
        own=(dict(learning_rate=0.02),
             dict(beta_1=0.0, beta_2=0.5, epsilon=1e-4)),
        random_own=_adam_like),
    "adadelta": Entry(
        "Adadelta", parity_learning_rate=1.0,
        own=(dict(learning_rate=1.0),
             dict(learning_rate=0.5, rho=0.5, epsilon=1e-5)),
        random_own=lambda rng: dict(
            rho=float(rng.choice([0.5, 0.9, 0.95])),
            epsilon=float(rng.choice([1e-7, 1e-5, 1e-3]))),
        learning_rates=(0.5, 1.0)),
    "rmsprop": Entry(
        "RMSprop",
        own=(dict(learning_rate=0.01), dict(momentum=0.9),
             dict(centered=True, rho=0.8),
             dict(momentum=0.5, centered=True, epsilon=1e-3)),
        random_own=lambda rng: dict(
            rho=float(rng.choice([0.5, 0.9, 0.95])),
            momentum=float(rng.choice([0.0, 0.3, 0.9])),
            centered=bool(rng.random() < 0.5),
            epsilon=float(rng.choice([1e-7, 1e-5, 1e-3])))),
    "sgd": Entry(
        "SGD",
        own=(dict(learning_rate=0.1), dict(momentum=0.9),
             dict(momentum=0.5, nesterov=True, learning_rate=0.05),
             dict(momentum=1.0, nesterov=True)),
        random_own=lambda rng: dict(
            momentum=float(rng.choice([0.0, 0.5, 0.9, 0.99])),
            nesterov=bool(rng.random() < 0.5)),
        learning_rates=(1e-3, 0.01, 0.1)),
    "adamw": Entry(
        "AdamW",
        own=(dict(learning_rate=0.01, weight_decay=0.1),
             dict(amsgrad=True, learning_rate=0.02, weight_decay=0.0),
             dict(beta_1=0.5, beta_2=0.9, epsilon=1e-3)),
        random_own=lambda rng: dict(
            _adam_like(rng), amsgrad=bool(rng.random() < 0.5),
            weight_decay=float(rng.choice([0.0, 0.004, 0.05])))),
    "lion": Entry(
        "Lion",
        own=(dict(learning_rate=0.01), dict(beta_1=1.0, beta_2=0.5),
             dict(beta_1=0.3, beta_2=0.999, weight_decay=0.5)),
        random_own=lambda rng: dict(
            beta_1=float(rng.choice([0.1, 0.5, 0.9, 1.0])),
            beta_2=float(rng.choice([0.0, 0.5, 0.99])))),
    "schedule_free_adamw": Entry(
        "ScheduleFreeAdamW",
        own=(dict(learning_rate=0.01, warmup_steps=5),
             dict(beta_1=0.5, beta_2=0.9, epsilon=1e-3),
             dict(beta_1=1.0, weight_decay=0.1, learning_rate=0.02),
             dict(beta_1=0.2, warmup_steps=40, weight_decay=0.3)),
        random_own=lambda rng: dict(
            beta_1=float(rng.choice([0.1, 0.5, 0.9, 1.0])),
            beta_2=float(rng.choice([0.0, 0.9, 0.999])),
            epsilon=float(rng.choice([1e-8, 1e-5, 1e-3])),
            warmup_steps=int(rng.choice([0, 3, 10]))),
        learning_rates=(1e-3, 0.0025, 0.02)),
    "muon": Entry(
        "Muon",
        own=(dict(learning_rate=0.02, nesterov=False),
             dict(rms_rate=None, learning_rate=0.01, momentum=0.8),
             dict(adam_lr_ratio=0.1, adam_beta_1=0.5, adam_beta_2=0.9,
                  epsilon=1e-3, learning_rate=0.02),
             dict(ns_steps=3, muon_a=2.0, muon_b=-1.5, muon_c=0.5),
             dict(weight_decay=None, adam_weight_decay=0.1,
                  learning_rate=0.05),
             dict(weight_decay=0.1, adam_weight_decay=None,
                  learning_rate=0.05),
             dict(exclude_layers=["kernel"], learning_rate=0.01)),
        random_own=lambda rng: dict(
            adam_beta_1=float(rng.choice([0.5, 0.9])),
            adam_beta_2=float(rng.choice([0.9, 0.999])),
            epsilon=float(rng.choice([1e-7, 1e-3])),
            adam_weight_decay=rng.choice([None, 0.004, 0.05]),
            adam_lr_ratio=float(rng.choice([1.0, 0.1])),
            momentum=float(rng.choice([0.5, 0.95])),
            ns_steps=int(rng.integers(1, 6)),
            nesterov=bool(rng.random() < 0.5),
            rms_rate=rng.choice([None, 0.2, 1.0])),
        learning_rates=(1e-3, 0.01, 0.02)),
    "adagrad": Entry(
        "Adagrad", parity_learning_rate=0.01,
        own=(dict(learning_rate=0.05, initial_accumulator_value=0.0),
             dict(learning_rate=0.1, initial_accumulator_value=1.0,
                  epsilon=1e-3)),
        random_own=lambda rng: dict(
            initial_accumulator_value=float(rng.choice([0.0, 0.1, 1.0])),
            epsilon=float(rng.choice([1e-7, 1e-5, 1e-3])))),
    "nadam": Entry(
        "Nadam", parity_learning_rate=0.01,
        own=(dict(learning_rate=0.02),
             dict(beta_1=0.5, beta_2=0.9, epsilon=1e-3),
             dict(beta_1=0.0, beta_2=0.5)),
        random_own=_adam_like),
    "lamb": Entry(
        "Lamb", parity_learning_rate=0.01,
        own=(dict(learning_rate=0.02),
             dict(beta_1=0.5, beta_2=0.9, epsilon=1e-3),
             dict(weight_decay=0.1, learning_rate=0.05)),
        random_own=_adam_like),
    "ftrl": Entry(
        "Ftrl", parity_learning_rate=0.05,
        own=(dict(learning_rate=0.1, learning_rate_power=-0.7,
                  initial_accumulator_value=0.5),
             dict(learning_rate=0.05, l1_regularization_strength=0.01,
                  l2_regularization_strength=0.1),
             dict(learning_rate=0.05, l2_shrinkage_regularization_strength=0.2,
                  beta=0.5),
             dict(learning_rate=0.2, learning_rate_power=0.0,
                  initial_accumulator_value=0.0, beta=1.0)),
        random_own=lambda rng: dict(
            learning_rate_power=float(rng.choice([-1.0, -0.5, -0.2, 0.0])),
            initial_accumulator_value=float(rng.choice([0.01, 0.1, 1.0])),
            l1_regularization_strength=float(rng.choice([0.0, 0.001, 0.05])),
            l2_regularization_strength=float(rng.choice([0.0, 0.01, 0.5])),
            l2_shrinkage_regularization_strength=float(
                rng.choice([0.0, 0.01, 0.3])),
            beta=float(rng.choice([0.0, 0.1, 1.0]))),
        learning_rates=(0.01, 0.05, 0.2)),
    "adafactor": Entry(
        "Adafactor",
        own=(dict(learning_rate=0.01),
             dict(beta_2_decay=-0.5, epsilon_1=1e-3, epsilon_2=0.1),
             dict(learning_rate=0.05, clip_threshold=0.2,
                  relative_step=False),
             dict(learning_rate=2.0, clip_threshold=5.0)),
        random_own=lambda rng: dict(
            beta_2_decay=float(rng.choice([-0.8, -0.5, -1.0])),
            epsilon_1=float(rng.choice([1e-30, 1e-10, 1e-3])),
            epsilon_2=float(rng.choice([1e-3, 1e-2, 0.5])),
            clip_threshold=float(rng.choice([0.5, 1.0, 4.0])),
            relative_step=bool(rng.random() < 0.5)),
        learning_rates=(1e-3, 0.01, 0.05, 0.5)),
}

KINDS = tuple(CATALOG)
