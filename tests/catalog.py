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

import optax


@dataclasses.dataclass(frozen=True)
class Entry:
  keras_class: str
  # Learning rate for the base-option parity runs (None: Keras's default).
  parity_learning_rate: Any = None
  # Own arguments away from their defaults, one parity run each.
  own: tuple = ()
  # rng -> own keyword arguments, for random configurations.
  random_own: Callable[[Any], dict] = lambda rng: {}
  # rng -> own keyword arguments of keras_sweep.py, wider than random_own's
  # (0 for the betas and rho, epsilon up to 1); None: random_own.
  sweep_own: Any = None
  # Learning rates the random configurations draw from.
  learning_rates: tuple = (1e-3, 0.01, 0.05)
  # Own arguments' invalid values, ((argument, (bad values...)), ...): each
  # fails at construction naming `argument=value` (tests/test_bad_input.py).
  bad_own: tuple = ()
  # Own arguments at the closed ends of their intervals: all accepted.
  edge_own: dict = dataclasses.field(default_factory=dict)
  # (options, dynamic_growth_steps, initial_scale) of the loss-scaling run
  # against Keras's LossScaleOptimizer with non-finite steps
  # (tests/test_loss_scale.py).
  loss_scale_run: Any = None
  # Keras's LossScaleOptimizer keeps every slot of the rule across its
  # `stateless_apply` (False for Nadam: its `u_product` is not among the
  # LossScaleOptimizer's variables, so Keras restarts it at 1 on each step
  # and is no oracle there; test_loss_scale.py checks Nadam on its own).
  keras_loss_scale_keeps_state: bool = True
  # The update of a row depends on that row only, so `lazy_rows=True` is
  # accepted (False: a per-leaf trust ratio, factored moments or an
  # orthogonalization mix a leaf's rows; the factory refuses lazy_rows).
  row_separable: bool = True
  # With dense gradient accumulation, `ox.apply`'s fused step (the update
  # inside a `cond`) gives `update` + `apply_updates`'s bits exactly, as
  # measured (tests/test_apply.py); False: XLA fuses the rule's arithmetic
  # differently there, within 2 ulps.
  fused_accumulation_bit_exact: bool = False
  # The step is scaled by the parameter's norm (a trust ratio): a parameter
  # at ~0 stays at ~0 whatever its gradient.
  trust_ratio: bool = False
  # Finite gradients keep the parameters and state finite. False for
  # Adafactor: an all-zero gradient of a factored leaf gives 0/0 in its
  # second-moment estimate, and Keras's Adafactor turns NaN on the same run
  # (tests/test_properties.py checks that it still does).
  finite_on_finite_gradients: bool = True
  # The rule's `scale_by_*` name in the package (None: scale_by_<kind>).
  rule: Any = None
  # Own arguments of the 200-step low-precision runs (tests/test_dtypes.py),
  # the configuration their bounds were measured on.
  dtype_run: dict = dataclasses.field(
      default_factory=lambda: dict(learning_rate=0.01))
  # The rule on its own (`scale_by_*`, tests/test_scale_by_rules.py), read
  # on the entry whose kind names the rule (adam's, not adamw's): its own
  # arguments for the runs against the Keras class of that kind (e.g. an
  # epsilon large enough for its placement to show, a momentum that makes a
  # slot) ...
  rule_own: dict = dataclasses.field(default_factory=dict)
  # ... Keras's arguments that switch off a decay the Keras class applies by
  # default: the factory adds the decay around the rule, the rule has none
  # (Muon's weight_decay and adam_weight_decay, 0.004 in Keras) ...
  rule_keras_own: dict = dataclasses.field(default_factory=dict)
  # ... the optax rule of the same name at `rule_own`, () -> transformation,
  # a different rule: its run must be far from Keras's (None: optax has none,
  # or has Keras's rule, as for Adadelta) ...
  optax_rule: Any = None
  # ... and whether the rule's step at a constant rate is the rate times a
  # step that does not depend on it, so that `scale_by_<rule>()` chained with
  # `optax.scale_by_learning_rate(lr)` gives Keras's numbers. False where the
  # rule reads the rate inside: Ftrl's per-coordinate rate, Adafactor's
  # relative step min(lr, 1/sqrt(t)), Schedule-Free's averaging weights.
  step_linear_in_learning_rate: bool = True


NAN, INF = float("nan"), float("inf")
EPSILON_BAD = ("epsilon", (-1e-7, NAN, INF, "1e-7"))


def _adam_like(rng):
  return dict(beta_1=float(rng.choice([0.0, 0.5, 0.9])),
              beta_2=float(rng.choice([0.9, 0.99, 0.999])),
              epsilon=float(rng.choice([1e-7, 1e-5, 1e-3])))


def _sweep_adam_like(rng):
  return dict(beta_1=float(rng.choice([0.0, 0.5, 0.9, 0.99])),
              beta_2=float(rng.choice([0.0, 0.5, 0.9, 0.999])),
              epsilon=_sweep_epsilon(rng))


def _sweep_rho(rng):
  return float(rng.choice([0.0, 0.5, 0.9, 0.95]))


def _sweep_epsilon(rng):
  return float(rng.choice([1e-7, 1e-4, 1e-2, 1.0]))


CATALOG: dict[str, Entry] = {
    "adam": Entry(
        "Adam",
        sweep_own=lambda rng: dict(_sweep_adam_like(rng),
                                   amsgrad=bool(rng.random() < 0.5)),
        rule_own=dict(epsilon=1e-3),
        optax_rule=lambda: optax.scale_by_adam(eps=1e-3),
        fused_accumulation_bit_exact=True,
        bad_own=(("beta_1", (-0.1, 1.0, 1.5, NAN)), ("beta_2", (-0.1, 1.0, NAN)), EPSILON_BAD),
        edge_own=dict(beta_1=0.0, beta_2=0.0, epsilon=0.0),
        loss_scale_run=(dict(learning_rate=0.01, gradient_accumulation_steps=2, use_ema=True, ema_overwrite_frequency=3), 3, 2.0**4),
        own=(dict(learning_rate=0.01), dict(amsgrad=True, learning_rate=0.02),
             dict(beta_1=0.5, beta_2=0.9, epsilon=1e-3)),
        random_own=lambda rng: dict(_adam_like(rng),
                                    amsgrad=bool(rng.random() < 0.5))),
    "adamax": Entry(
        "Adamax",
        sweep_own=lambda rng: _sweep_adam_like(rng),
        rule_own=dict(beta_2=0.5, epsilon=1e-3),
        optax_rule=lambda: optax.scale_by_adamax(b2=0.5, eps=1e-3),
        fused_accumulation_bit_exact=True,
        bad_own=(("beta_1", (-0.1, 1.0, NAN)), ("beta_2", (-1e-3, 1.0, INF)), EPSILON_BAD),
        edge_own=dict(beta_1=0.0, beta_2=0.0, epsilon=0.0),
        loss_scale_run=(dict(learning_rate=0.02, gradient_accumulation_steps=3, use_ema=True, weight_decay=0.01), 3, 2.0**10),
        own=(dict(learning_rate=0.02),
             dict(beta_1=0.0, beta_2=0.5, epsilon=1e-4)),
        random_own=_adam_like),
    "adadelta": Entry(
        "Adadelta",
        sweep_own=lambda rng: dict(rho=_sweep_rho(rng),
                                   epsilon=_sweep_epsilon(rng)),
        rule_own=dict(epsilon=1e-3),  # optax's Adadelta is Keras's rule.
        dtype_run=dict(learning_rate=1.0),
        bad_own=(("rho", (-0.1, 1.0, NAN)), EPSILON_BAD),
        edge_own=dict(rho=0.0, epsilon=0.0),
        loss_scale_run=(dict(learning_rate=1.0, rho=0.9, clipvalue=1.0, gradient_accumulation_steps=2, use_ema=True, ema_overwrite_frequency=4, weight_decay=0.02), 3, 2.0**8),
        parity_learning_rate=1.0,
        own=(dict(learning_rate=1.0),
             dict(learning_rate=0.5, rho=0.5, epsilon=1e-5)),
        random_own=lambda rng: dict(
            rho=float(rng.choice([0.5, 0.9, 0.95])),
            epsilon=float(rng.choice([1e-7, 1e-5, 1e-3]))),
        learning_rates=(0.5, 1.0)),
    "rmsprop": Entry(
        "RMSprop",
        sweep_own=lambda rng: dict(
            rho=_sweep_rho(rng), momentum=float(rng.choice([0.0, 0.1, 0.9])),
            centered=bool(rng.random() < 0.5), epsilon=_sweep_epsilon(rng)),
        # Keras keeps the learning rate inside the momentum, optax's trace
        # outside: a changing rate shows it.
        rule_own=dict(momentum=0.9, epsilon=1e-3),
        optax_rule=lambda: optax.chain(
            optax.scale_by_rms(decay=0.9, eps=1e-3, eps_in_sqrt=True),
            optax.trace(0.9)),
        bad_own=(("rho", (-0.1, 1.0, NAN)), ("momentum", (-0.5, 1.0, INF)), EPSILON_BAD),
        edge_own=dict(rho=0.0, momentum=0.0, epsilon=0.0),
        loss_scale_run=(dict(learning_rate=0.01, momentum=0.5, centered=True, use_ema=True, ema_momentum=0.9, gradient_accumulation_steps=2, global_clipnorm=5.0), 3, 2.0**15),
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
        rule_own=dict(momentum=0.9),
        dtype_run=dict(learning_rate=0.01, momentum=0.9),
        bad_own=(("momentum", (-0.5, 1.01, NAN, INF, "0.9")),),
        edge_own=dict(momentum=1.0, nesterov=True),
        loss_scale_run=(dict(learning_rate=0.02, momentum=0.9, nesterov=True, gradient_accumulation_steps=2, use_ema=True, weight_decay=0.01), 3, 2.0**8),
        own=(dict(learning_rate=0.1), dict(momentum=0.9),
             dict(momentum=0.5, nesterov=True, learning_rate=0.05),
             dict(momentum=1.0, nesterov=True)),
        random_own=lambda rng: dict(
            momentum=float(rng.choice([0.0, 0.5, 0.9, 0.99])),
            nesterov=bool(rng.random() < 0.5)),
        learning_rates=(1e-3, 0.01, 0.1)),
    "adamw": Entry(
        "AdamW",
        rule="scale_by_adam",
        fused_accumulation_bit_exact=True,
        bad_own=(("beta_1", (-0.1, 1.0, NAN)), ("beta_2", (-0.1, 1.0, INF)), EPSILON_BAD, ("weight_decay", (None,))),
        edge_own=dict(beta_1=0.0, beta_2=0.0, epsilon=0.0),
        loss_scale_run=(dict(learning_rate=0.01, amsgrad=True, weight_decay=0.05, gradient_accumulation_steps=3, use_ema=True, ema_overwrite_frequency=4), 3, 2.0**6),
        own=(dict(learning_rate=0.01, weight_decay=0.1),
             dict(amsgrad=True, learning_rate=0.02, weight_decay=0.0),
             dict(beta_1=0.5, beta_2=0.9, epsilon=1e-3)),
        random_own=lambda rng: dict(
            _adam_like(rng), amsgrad=bool(rng.random() < 0.5),
            weight_decay=float(rng.choice([0.0, 0.004, 0.05])))),
    "lion": Entry(
        "Lion",
        fused_accumulation_bit_exact=True,
        bad_own=(("beta_1", (0.0, -0.1, 1.5, NAN, "0.9")), ("beta_2", (-0.1, 1.5, NAN))),
        edge_own=dict(beta_1=1.0, beta_2=1.0),
        loss_scale_run=(dict(learning_rate=0.01, beta_1=0.5, weight_decay=0.1, clipnorm=1.0, gradient_accumulation_steps=2), 3, 2.0**12),
        own=(dict(learning_rate=0.01), dict(beta_1=1.0, beta_2=0.5),
             dict(beta_1=0.3, beta_2=0.999, weight_decay=0.5)),
        random_own=lambda rng: dict(
            beta_1=float(rng.choice([0.1, 0.5, 0.9, 1.0])),
            beta_2=float(rng.choice([0.0, 0.5, 0.99])))),
    "schedule_free_adamw": Entry(
        "ScheduleFreeAdamW",
        step_linear_in_learning_rate=False,
        dtype_run=dict(learning_rate=0.01, warmup_steps=10),
        fused_accumulation_bit_exact=True,
        bad_own=(("beta_1", (0.0, -0.1, 1.5, NAN)), ("beta_2", (-0.1, 1.0, NAN)), EPSILON_BAD, ("warmup_steps", (-1, 2.5, "3", True, None))),
        edge_own=dict(beta_1=1.0, beta_2=0.0, epsilon=0.0, warmup_steps=0),
        loss_scale_run=(dict(learning_rate=0.01, warmup_steps=4, weight_decay=0.05, use_ema=True, gradient_accumulation_steps=2), 3, 2.0**10),
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
        rule_keras_own=dict(weight_decay=None, adam_weight_decay=None),
        fused_accumulation_bit_exact=True,
        bad_own=(("adam_beta_1", (-0.1, 1.0, NAN)), ("adam_beta_2", (1.0, INF)), ("momentum", (-0.5, 1.0, NAN)), ("ns_steps", (-1, 2.5, "5")), ("rms_rate", (-0.2, NAN)), ("adam_lr_ratio", (-1.0, INF)), ("adam_weight_decay", (-0.004, NAN)), ("exclude_layers", ("dense", [1])), ("muon_a", ("3", NAN)), EPSILON_BAD),
        edge_own=dict(adam_beta_1=0.0, adam_beta_2=0.0, momentum=0.0, ns_steps=0, rms_rate=0.0, adam_weight_decay=0.0, adam_lr_ratio=0.0, epsilon=0.0),
        loss_scale_run=(dict(learning_rate=0.02, gradient_accumulation_steps=2, use_ema=True, weight_decay=0.05, adam_weight_decay=0.02), 3, 2.0**8),
        row_separable=False,
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
        "Adagrad",
        bad_own=(("initial_accumulator_value", (-0.1, NAN, INF, "0.1")), EPSILON_BAD),
        edge_own=dict(initial_accumulator_value=0.0, epsilon=0.0),
        loss_scale_run=(dict(learning_rate=0.05, initial_accumulator_value=0.5, gradient_accumulation_steps=2, use_ema=True, ema_overwrite_frequency=4, weight_decay=0.02), 3, 2.0**8), parity_learning_rate=0.01,
        own=(dict(learning_rate=0.05, initial_accumulator_value=0.0),
             dict(learning_rate=0.1, initial_accumulator_value=1.0,
                  epsilon=1e-3)),
        random_own=lambda rng: dict(
            initial_accumulator_value=float(rng.choice([0.0, 0.1, 1.0])),
            epsilon=float(rng.choice([1e-7, 1e-5, 1e-3])))),
    "nadam": Entry(
        "Nadam",
        fused_accumulation_bit_exact=True,
        bad_own=(("beta_1", (-0.1, 1.0, NAN)), ("beta_2", (-0.1, 1.0, INF)), EPSILON_BAD),
        edge_own=dict(beta_1=0.0, beta_2=0.0, epsilon=0.0),
        keras_loss_scale_keeps_state=False, parity_learning_rate=0.01,
        own=(dict(learning_rate=0.02),
             dict(beta_1=0.5, beta_2=0.9, epsilon=1e-3),
             dict(beta_1=0.0, beta_2=0.5)),
        random_own=_adam_like),
    "lamb": Entry(
        "Lamb",
        trust_ratio=True,
        bad_own=(("beta_1", (-0.1, 1.0, INF)), ("beta_2", (-0.1, 1.0, NAN)), EPSILON_BAD),
        edge_own=dict(beta_1=0.0, beta_2=0.0, epsilon=0.0),
        loss_scale_run=(dict(learning_rate=0.01, weight_decay=0.05, gradient_accumulation_steps=2, use_ema=True, ema_overwrite_frequency=5, global_clipnorm=3.0), 3, 2.0**6),
        row_separable=False, parity_learning_rate=0.01,
        own=(dict(learning_rate=0.02),
             dict(beta_1=0.5, beta_2=0.9, epsilon=1e-3),
             dict(weight_decay=0.1, learning_rate=0.05)),
        random_own=_adam_like),
    "ftrl": Entry(
        "Ftrl",
        step_linear_in_learning_rate=False,
        dtype_run=dict(learning_rate=0.05),
        fused_accumulation_bit_exact=True,
        bad_own=(("learning_rate_power", (0.5, 1, NAN, -INF, "-0.5")), ("initial_accumulator_value", (-0.1, NAN, INF)), ("l1_regularization_strength", (-1e-3, NAN)), ("l2_regularization_strength", (-1e-3, INF)), ("l2_shrinkage_regularization_strength", (-1e-3, NAN)), ("beta", (-0.5, NAN, "0.1"))),
        edge_own=dict(learning_rate_power=0.0, initial_accumulator_value=0.0, l1_regularization_strength=0.0, l2_regularization_strength=0.0, l2_shrinkage_regularization_strength=0.0, beta=0.0),
        loss_scale_run=(dict(learning_rate=0.05, l1_regularization_strength=0.01, beta=0.2, gradient_accumulation_steps=2, use_ema=True, ema_overwrite_frequency=4, weight_decay=0.02), 3, 2.0**8), parity_learning_rate=0.05,
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
        step_linear_in_learning_rate=False,
        dtype_run=dict(learning_rate=0.05),
        finite_on_finite_gradients=False,
        bad_own=(("beta_2_decay", (0.8, NAN, -INF, "-0.8")), ("epsilon_1", (-1e-30, NAN, INF)), ("epsilon_2", (-1e-3, NAN)), ("clip_threshold", (0.0, -1.0, NAN, INF))),
        edge_own=dict(beta_2_decay=0.0, epsilon_1=0.0, epsilon_2=0.0, relative_step=False),
        loss_scale_run=(dict(learning_rate=0.05, clip_threshold=0.5, gradient_accumulation_steps=3, use_ema=True, global_clipnorm=2.0, weight_decay=0.01), 3, 2.0**12),
        row_separable=False,
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
# The optimizers whose factories take lazy_rows (Entry.row_separable).
ROW_SEPARABLE = tuple(k for k in KINDS if CATALOG[k].row_separable)
NOT_ROW_SEPARABLE = tuple(k for k in KINDS if not CATALOG[k].row_separable)


def rule_name(kind: str) -> str:
  """The package's name of `kind`'s rule, e.g. "scale_by_adam"."""
  return CATALOG[kind].rule or f"scale_by_{kind}"


def rule_kind(rule: str) -> str:
  """The kind whose entry describes `rule` ("scale_by_adam" -> "adam")."""
  kind = rule[len("scale_by_"):]
  assert rule_name(kind) == rule, rule
  return kind


# Every `scale_by_*` rule of the package, once (AdamW shares Adam's).
RULES = tuple(sorted({rule_name(k) for k in KINDS}))

