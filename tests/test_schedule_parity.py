"""Learning-rate schedules inside every factory of tests/catalog.py, against
Keras 3.

Keras resolves the learning rate once per ``apply`` call at ``_iterations``
(every call, micro-steps included) and hands it to both the weight decay and
the update rule, whose bias correction counts update steps
(``iterations = _iterations // gradient_accumulation_steps``). Each case here
combines a schedule with gradient accumulation, weight decay and EMA, so a
schedule that counted update steps, or a weight decay that used the
unscheduled or the previous learning rate, would show up at once: the
schedules below change the learning rate on every call.

Both sides run 30 steps of varied gradients under ``jax.jit`` (Keras through
``stateless_apply``) and the parameters are compared after every step with
``keras_oracle.assert_trajectories_match`` (a few float32 ulps of each
leaf's magnitude; the schedules match Keras to float32 rounding, and XLA may
fuse the two programs differently).
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import optax_suite as ox  # noqa: E402
from catalog import CATALOG  # noqa: E402
from catalog import KINDS  # noqa: E402
from keras_oracle import FAR  # noqa: E402
from keras_oracle import assert_trajectories_match  # noqa: E402
from keras_oracle import keras_trajectory  # noqa: E402
from keras_oracle import make_params  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import ours_trajectory  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

STEPS = 30
FACTORIES = {kind: getattr(ox, kind) for kind in KINDS}
KS = keras.optimizers.schedules

# schedule class -> its arguments for a peak learning rate `lr`; each changes
# the learning rate on every call.
SCHEDULES = {
    "ExponentialDecay": lambda lr: dict(
        initial_learning_rate=lr, decay_steps=4, decay_rate=0.7,
        staircase=True),
    "PiecewiseConstantDecay": lambda lr: dict(
        boundaries=[5, 11, 20], values=[lr, 0.3 * lr, 2 * lr, 0.1 * lr]),
    # decay_steps a power of 2: under `jax.jit` XLA turns Keras's
    # `step / decay_steps` into a product by the reciprocal, so with 7
    # Keras's own cycle boundaries move (ceil(21 * (1/7)) = 4); exact
    # reciprocals keep the oracle at Keras's eager values.
    "PolynomialDecay": lambda lr: dict(
        initial_learning_rate=lr, decay_steps=8, end_learning_rate=0.05 * lr,
        power=2.0, cycle=True),
    "InverseTimeDecay": lambda lr: dict(
        initial_learning_rate=lr, decay_steps=3, decay_rate=0.5),
    "CosineDecay": lambda lr: dict(
        initial_learning_rate=0.0, decay_steps=17, alpha=0.1,
        warmup_target=lr, warmup_steps=8),
    "CosineDecayRestarts": lambda lr: dict(
        initial_learning_rate=lr, first_decay_steps=5, t_mul=1.5, m_mul=0.8,
        alpha=0.05),
}
# Base options, cycled: accumulation, weight decay and EMA always on.
OPTIONS = [
    dict(gradient_accumulation_steps=3, weight_decay=0.05, use_ema=True,
         ema_momentum=0.8, ema_overwrite_frequency=4),
    dict(gradient_accumulation_steps=2, weight_decay=0.1, use_ema=True,
         ema_momentum=0.7, clipvalue=0.5),
    dict(gradient_accumulation_steps=2, weight_decay=0.05, use_ema=True,
         ema_momentum=0.9, ema_overwrite_frequency=3),
    dict(gradient_accumulation_steps=3, weight_decay=0.2, use_ema=True,
         ema_momentum=0.85),
    dict(gradient_accumulation_steps=2, weight_decay=0.1, global_clipnorm=2.0,
         use_ema=True, ema_momentum=0.75, ema_overwrite_frequency=5),
    dict(gradient_accumulation_steps=2, weight_decay=0.1, clipnorm=1.0,
         use_ema=True, ema_momentum=0.9),
]


def _case(i, kind):
  """The i-th catalog entry's case: the schedules in turn, at the largest
  learning rate its random configurations draw, with its last own
  arguments (learning rate aside) and the base options in turn."""
  entry = CATALOG[kind]
  class_name = list(SCHEDULES)[i % len(SCHEDULES)]
  arguments = SCHEDULES[class_name](max(entry.learning_rates))
  own = {k: v for k, v in (entry.own[-1] if entry.own else {}).items()
         if k != "learning_rate"}
  return kind, class_name, arguments, dict(own, **OPTIONS[i % len(OPTIONS)])


# id -> (optimizer, schedule class, schedule arguments, optimizer options):
# one per catalog entry, so each of the six schedules appears at least twice.
CASES = {f"{kind}-{_case(i, kind)[1]}": _case(i, kind)
         for i, kind in enumerate(KINDS)}


def _compare(kind, ours_lr, keras_lr, options, seed):
  params = make_params(seed)
  grads = varied_grads(params, STEPS, seed=seed)
  expected, _ = keras_trajectory(kind, params, grads, learning_rate=keras_lr,
                                 **options)
  got, _ = ours_trajectory(FACTORIES[kind](ours_lr, **options), params, grads)
  assert_trajectories_match(expected, got, STEPS)




# The first len(SCHEDULES) entries show each schedule once; the other
# entries' cases are `slow` (left out by -m "not slow", run by CI).
@pytest.mark.parametrize("case", [
    pytest.param(case, marks=[pytest.mark.slow] if i >= len(SCHEDULES)
                 else []) for i, case in enumerate(CASES)])
@pytest.mark.fast_cases(1)
def test_keras_schedule_in_factory_matches_keras(case):
  kind, class_name, arguments, options = CASES[case]
  ours = ox.schedules.from_config(arguments, class_name=class_name)
  keras_schedule = getattr(KS, class_name)(**arguments)
  # The schedule must really move within the run, or the test proves little.
  lrs = {float(ours(t)) for t in range(STEPS)}
  assert len(lrs) >= 4, lrs
  _compare(kind, ours, keras_schedule, options,
           seed=list(CASES).index(case))


class _KerasWrapped(KS.LearningRateSchedule):
  """An optax schedule seen by Keras: called with Keras's `_iterations`."""

  def __init__(self, fn):
    self.fn = fn

  def __call__(self, step):
    return self.fn(step)


def test_optax_schedule_counts_every_call_as_keras():
  """An optax schedule sees every call, micro-steps included, as Keras's.

  The same schedule on a clock of update steps (what optax's ``MultiSteps``
  around an optimizer would give) is far off Keras: the comparison can fail.
  """
  sched = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=0.05, warmup_steps=6, decay_steps=24,
      end_value=0.005)
  options = dict(gradient_accumulation_steps=3, weight_decay=0.1,
                 use_ema=True, ema_momentum=0.8, ema_overwrite_frequency=3)
  params = make_params(11)
  grads = varied_grads(params, STEPS, seed=11)
  expected, _ = keras_trajectory("adam", params, grads,
                                 learning_rate=_KerasWrapped(sched), **options)
  right, _ = ours_trajectory(ox.adam(sched, **options), params, grads)
  wrong, _ = ours_trajectory(
      ox.adam(lambda count: sched(count // 3), **options), params, grads)
  assert_trajectories_match(expected, right, STEPS)
  assert max_deviation(expected, wrong) > FAR


def test_zero_argument_callable_learning_rate_matches_keras():
  """Keras calls a non-schedule callable with no argument; so do we."""
  calls = []

  def learning_rate():
    calls.append(1)
    return jnp.float32(0.02)

  kind = "adamax"
  options = dict(gradient_accumulation_steps=2, weight_decay=0.1,
                 use_ema=True, ema_momentum=0.9)
  params = make_params(5)
  grads = varied_grads(params, STEPS, seed=5)
  expected, _ = keras_trajectory(kind, params, grads,
                                 learning_rate=learning_rate, **options)
  calls.clear()
  got, _ = ours_trajectory(FACTORIES[kind](learning_rate, **options), params,
                           grads)
  assert_trajectories_match(expected, got, STEPS)
  # Under jit it is evaluated while tracing only, not on every step.
  assert 0 < len(calls) < STEPS
