"""Config round trips: ``get_config`` / ``from_config``, ours and Keras's.

What is proved here:

* ``get_config`` is JSON-serialisable, uses Keras's key names and shape, and
  ``from_config`` rebuilds an optimizer whose config is the same and whose
  trajectory is bitwise the original's (schedules, every base option and
  ``exclude_from_weight_decay`` included);
* the dict ``keras.optimizers.serialize`` writes for Adam, Adamax, Adadelta,
  RMSprop, Ftrl, Adafactor (and LossScaleOptimizer) with any of the six schedules is read by
  ``from_config``; writing the result back gives Keras's dict key for key,
  and its trajectory matches Keras's (``atol = rtol = 1e-6``);
* Keras's own ``deserialize`` reads what ``get_config`` writes;
* unknown keys, unsupported classes and values with no JSON form get a
  ``ValueError`` naming them.
"""

import copy
import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

import optax_suite as ox  # noqa: E402
from keras_oracle import assert_trajectories_match  # noqa: E402
from keras_oracle import keras_trajectory  # noqa: E402
from keras_oracle import make_params  # noqa: E402
from keras_oracle import max_deviation  # noqa: E402
from keras_oracle import ours_trajectory  # noqa: E402
from keras_oracle import varied_grads  # noqa: E402

STEPS = 26
KS = keras.optimizers.schedules
SCHEDULES = {
    "ExponentialDecay": dict(initial_learning_rate=0.05, decay_steps=4,
                             decay_rate=0.7, staircase=True),
    "PiecewiseConstantDecay": dict(boundaries=[5, 11], values=[0.1, 0.03,
                                                               0.01]),
    "PolynomialDecay": dict(initial_learning_rate=0.1, decay_steps=7,
                            end_learning_rate=0.01, power=2.0, cycle=True),
    "InverseTimeDecay": dict(initial_learning_rate=0.02, decay_steps=3,
                             decay_rate=0.5),
    "CosineDecay": dict(initial_learning_rate=0.0, decay_steps=17, alpha=0.1,
                        warmup_target=0.08, warmup_steps=8),
    "CosineDecayRestarts": dict(initial_learning_rate=0.03,
                                first_decay_steps=5, t_mul=1.5, m_mul=0.8,
                                alpha=0.05),
}
OURS = {
    "adam-everything": lambda: ox.adam(
        ox.schedules.cosine_decay(0.0, 17, 0.1, warmup_target=0.08,
                                  warmup_steps=8),
        beta_1=0.8, beta_2=0.99, epsilon=1e-6, amsgrad=True,
        weight_decay=0.1, clipnorm=1.0, use_ema=True, ema_momentum=0.9,
        ema_overwrite_frequency=3, loss_scale_factor=4.0,
        gradient_accumulation_steps=2, name="my_adam",
        exclude_from_weight_decay=["bias", "scale"]),
    "adamax-piecewise": lambda: ox.adamax(
        ox.schedules.piecewise_constant_decay([5, 11], [0.1, 0.03, 0.01]),
        weight_decay=0.05, global_clipnorm=2.0, use_ema=True),
    "adadelta-float": lambda: ox.adadelta(1.0, rho=0.9, clipvalue=0.5,
                                          gradient_accumulation_steps=3),
    "rmsprop-restarts": lambda: ox.rmsprop(
        ox.schedules.cosine_decay_restarts(0.03, 5, 1.5, 0.8, 0.05),
        momentum=0.5, centered=True, weight_decay=0.1,
        exclude_from_weight_decay=["kernel"]),
    "sgd-inverse-time": lambda: ox.sgd(
        ox.schedules.inverse_time_decay(0.02, 3, 0.5), momentum=0.9,
        nesterov=True, weight_decay=0.01, use_ema=True,
        gradient_accumulation_steps=2),
    "adamw-cosine": lambda: ox.adamw(
        ox.schedules.cosine_decay(0.01, 20, 0.1), 0.05, amsgrad=True,
        clipnorm=1.0, use_ema=True, exclude_from_weight_decay=["bias"]),
    "lion-polynomial": lambda: ox.lion(
        ox.schedules.polynomial_decay(0.01, 7, 0.001, power=2.0, cycle=True),
        beta_1=0.5, beta_2=0.9, weight_decay=0.3, global_clipnorm=1.0,
        gradient_accumulation_steps=3),
    "schedule_free_adamw-exponential": lambda: ox.schedule_free_adamw(
        ox.schedules.exponential_decay(0.01, 4, 0.7), beta_1=0.8,
        warmup_steps=5, weight_decay=0.1, use_ema=True,
        ema_overwrite_frequency=4, gradient_accumulation_steps=2),
    "muon-inverse-time": lambda: ox.muon(
        ox.schedules.inverse_time_decay(0.02, 3, 0.5), adam_beta_1=0.8,
        adam_weight_decay=0.01, weight_decay=0.02, exclude_layers=["conv"],
        exclude_embeddings=False, ns_steps=3, nesterov=False, rms_rate=None,
        adam_lr_ratio=0.5, use_ema=True, gradient_accumulation_steps=2,
        exclude_from_weight_decay=["bias"]),
    "adagrad-polynomial": lambda: ox.adagrad(
        ox.schedules.polynomial_decay(0.1, 7, 0.01, power=2.0, cycle=True),
        initial_accumulator_value=0.2, epsilon=1e-5, weight_decay=0.05,
        clipvalue=0.5, use_ema=True, gradient_accumulation_steps=2,
        name="my_adagrad"),
    "nadam-exponential": lambda: ox.nadam(
        ox.schedules.exponential_decay(0.05, 4, 0.7, staircase=True),
        beta_1=0.8, beta_2=0.99, epsilon=1e-5, global_clipnorm=1.0,
        weight_decay=0.01, use_ema=True, ema_overwrite_frequency=5,
        loss_scale_factor=16.0, exclude_from_weight_decay=["bias"]),
    "lamb-inverse-time": lambda: ox.lamb(
        ox.schedules.inverse_time_decay(0.02, 3, 0.5), beta_1=0.85,
        epsilon=1e-6, weight_decay=0.1, clipnorm=1.0,
        gradient_accumulation_steps=2, exclude_from_weight_decay=["kernel"]),
    "ftrl-everything": lambda: ox.ftrl(
        ox.schedules.inverse_time_decay(0.2, 3, 0.5), learning_rate_power=-0.7,
        initial_accumulator_value=0.3, l1_regularization_strength=0.01,
        l2_regularization_strength=0.02,
        l2_shrinkage_regularization_strength=0.05, beta=0.4, weight_decay=0.01,
        use_ema=True, gradient_accumulation_steps=2,
        exclude_from_weight_decay=["bias"]),
    "adafactor-everything": lambda: ox.adafactor(
        ox.schedules.polynomial_decay(0.5, 7, 0.01, power=2.0),
        beta_2_decay=-0.6, epsilon_1=1e-20, epsilon_2=0.01,
        clip_threshold=0.5, relative_step=False, weight_decay=0.01,
        clipvalue=0.5, use_ema=True, ema_overwrite_frequency=4,
        loss_scale_factor=2.0, gradient_accumulation_steps=2),
}


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("case", sorted(OURS))
def test_round_trip_through_json_rebuilds_the_same_optimizer(case):
  opt = OURS[case]()
  d = ox.get_config(opt)
  assert set(d) == {"module", "class_name", "config", "registered_name"}
  d_json = json.loads(json.dumps(d))
  rebuilt = ox.from_config(d_json)
  assert ox.get_config(rebuilt) == d_json == d
  assert rebuilt.factory is opt.factory
  params = make_params(7)
  grads = varied_grads(params, STEPS, seed=7)
  original, _ = ours_trajectory(opt, params, grads)
  again, _ = ours_trajectory(rebuilt, params, grads)
  assert max_deviation(original, again) == 0


def test_config_uses_keras_key_names_and_schedule_form():
  opt = ox.rmsprop(ox.schedules.exponential_decay(0.1, 10, 0.5), momentum=0.3)
  keras_opt = keras.optimizers.RMSprop(KS.ExponentialDecay(0.1, 10, 0.5),
                                       momentum=0.3, name="rmsprop")
  ours, theirs = ox.get_config(opt), keras.optimizers.serialize(keras_opt)
  assert ours == theirs
  assert list(ours["config"]) == list(theirs["config"])


def test_muon_config_is_keras_config():
  """Muon's defaults and non-defaults, key for key and in Keras's order
  (Keras writes `exclude_layers=None` as [], and its learning rate as a
  float32, so the rates here are exact in float32)."""
  for kw in (dict(learning_rate=0.03125), dict(learning_rate=0.5,exclude_layers=["head"], rms_rate=None, ns_steps=2,
                      adam_weight_decay=None, weight_decay=None)):
    ours = ox.get_config(ox.muon(**kw, name="muon"))
    theirs = keras.optimizers.serialize(keras.optimizers.Muon(**kw,
                                                              name="muon"))
    assert ours == theirs
    assert list(ours["config"]) == list(theirs["config"])


def _keras_optimizers():
  """Keras optimizers to carry over: every class, every schedule."""
  out = {}
  names = sorted(SCHEDULES)
  kinds = [
      (keras.optimizers.Adam, dict(amsgrad=True, weight_decay=0.05,
                                   use_ema=True, ema_overwrite_frequency=3,
                                   gradient_accumulation_steps=2)),
      (keras.optimizers.Adamax, dict(beta_1=0.7, clipnorm=0.5)),
      (keras.optimizers.Adadelta, dict(rho=0.8, global_clipnorm=1.0,
                                       loss_scale_factor=8.0)),
      (keras.optimizers.RMSprop, dict(momentum=0.4, centered=True,
                                      clipvalue=0.1, weight_decay=0.01)),
      (keras.optimizers.SGD, dict(momentum=0.9, nesterov=True,
                                  weight_decay=0.02, use_ema=True)),
      (keras.optimizers.AdamW, dict(weight_decay=0.1, amsgrad=True,
                                    clipnorm=1.0)),
      (keras.optimizers.Lion, dict(beta_1=0.5, beta_2=0.9, weight_decay=0.2,
                                   gradient_accumulation_steps=3)),
      (keras.optimizers.ScheduleFreeAdamW, dict(beta_1=0.8, warmup_steps=3,
                                                weight_decay=0.05,
                                                clipvalue=0.5)),
      (keras.optimizers.Muon, dict(exclude_layers=["kernel"], ns_steps=3,
                                   rms_rate=None, adam_lr_ratio=0.5,
                                   adam_weight_decay=None)),
      (keras.optimizers.Adagrad, dict(initial_accumulator_value=0.3,
                                      epsilon=1e-5, use_ema=True,
                                      ema_overwrite_frequency=4)),
      (keras.optimizers.Nadam, dict(beta_1=0.8, beta_2=0.99, epsilon=1e-5,
                                    clipnorm=1.0, weight_decay=0.02,
                                    gradient_accumulation_steps=3)),
      (keras.optimizers.Lamb, dict(beta_1=0.85, epsilon=1e-6,
                                   weight_decay=0.1, use_ema=True,
                                   ema_overwrite_frequency=2)),
      (keras.optimizers.Ftrl, dict(learning_rate_power=-0.3, beta=0.2,
                                   l1_regularization_strength=0.01,
                                   l2_shrinkage_regularization_strength=0.1,
                                   weight_decay=0.02, use_ema=True)),
      (keras.optimizers.Adafactor, dict(beta_2_decay=-0.5, epsilon_2=0.01,
                                        clip_threshold=0.5,
                                        relative_step=False,
                                        gradient_accumulation_steps=2)),
  ]
  for i, name in enumerate(names):
    cls, options = kinds[i % len(kinds)]
    out[f"{cls.__name__}-{name}"] = lambda cls=cls, name=name, o=options: cls(
        getattr(KS, name)(**SCHEDULES[name]), **o)
  for cls, options in kinds:
    out[f"{cls.__name__}-float"] = lambda cls=cls, o=options: cls(0.02, **o)
  return out


KERAS_OPTIMIZERS = _keras_optimizers()


@pytest.mark.parametrize("case", sorted(KERAS_OPTIMIZERS))
def test_keras_serialized_optimizer_is_read_and_written_back(case):
  keras_dict = keras.optimizers.serialize(KERAS_OPTIMIZERS[case]())
  opt = ox.from_config(json.loads(json.dumps(keras_dict)))
  assert ox.get_config(opt) == keras_dict


@pytest.mark.parametrize("case", ["Adam-CosineDecay", "RMSprop-float",
                                  "Muon-float",
                                  "Adagrad-float",
                                  "Nadam-float", "Lamb-float",
                                  "Ftrl-float", "Adafactor-float"])
@pytest.mark.fast_cases(1)
def test_optimizer_carried_over_from_keras_trains_as_keras(case):
  keras_opt = KERAS_OPTIMIZERS[case]()
  opt = ox.from_config(keras.optimizers.serialize(keras_opt))
  params = make_params(8)
  grads = varied_grads(params, STEPS, seed=8)
  expected, _ = keras_trajectory(keras_opt, params, grads)
  got, _ = ours_trajectory(opt, params, grads)
  assert_trajectories_match(expected, got, STEPS)


def test_keras_reads_what_get_config_writes():
  opt = ox.adamax(ox.schedules.polynomial_decay(0.1, 7, power=2.0),
                  beta_2=0.9, weight_decay=0.01, use_ema=True)
  d = ox.get_config(opt)
  keras_opt = keras.optimizers.deserialize(copy.deepcopy(d))  # It mutates.
  assert type(keras_opt) is keras.optimizers.Adamax
  assert keras.optimizers.serialize(keras_opt) == d


def test_plain_keras_get_config_with_class_name():
  keras_opt = keras.optimizers.Adadelta(0.5, rho=0.7)
  opt = ox.from_config(keras_opt.get_config(), class_name="Adadelta")
  assert ox.get_config(opt)["config"] == keras_opt.get_config()
  assert ox.from_config(keras_opt.get_config(), "adadelta").factory is (
      ox.adadelta)


def test_loss_scale_optimizer_from_keras():
  keras_opt = keras.optimizers.LossScaleOptimizer(
      keras.optimizers.Adam(KS.InverseTimeDecay(0.02, 3, 0.5)),
      initial_scale=64.0, dynamic_growth_steps=3)
  keras_dict = keras.optimizers.serialize(keras_opt)
  opt = ox.from_config(keras_dict)
  direct = ox.loss_scale_optimizer(
      ox.adam(ox.schedules.inverse_time_decay(0.02, 3, 0.5),
              name=keras_opt.inner_optimizer.name),  # Keras numbers names.
      initial_scale=64.0, dynamic_growth_steps=3,
      name=keras_opt.name)  # Keras numbers names per process.
  params = make_params(9)
  grads = varied_grads(params, 8, seed=9)
  a, state = ours_trajectory(opt, params, grads)
  b, _ = ours_trajectory(direct, params, grads)
  assert max_deviation(a, b) == 0
  assert float(state.scale) == 64.0 * 2 ** (8 // 3)  # it grew: it is dynamic.
  assert ox.get_config(opt) == keras_dict
  assert ox.get_config(direct) == keras_dict


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["config"].update(nesterov=True), "nesterov"),
    (lambda d: d.update(class_name="SGD"), "SGD"),
    (lambda d: d.update(extra=1), "extra"),
    (lambda d: d["config"].update(learning_rate={
        "class_name": "WarmUp", "config": {}}), "WarmUp"),
    (lambda d: d["config"]["learning_rate"].update(class_name="Cyclic"),
     "Cyclic"),
    (lambda d: d["config"]["learning_rate"]["config"].update(gamma=0.5),
     "gamma"),
    (lambda d: d.update(registered_name="Custom>Adam"), "Custom>Adam"),
    (lambda d: d["config"].update(beta_1=1.5), "beta_1"),
])
def test_bad_configs_name_what_is_wrong(mutate, message):
  d = ox.get_config(ox.adam(ox.schedules.exponential_decay(0.1, 10, 0.5)))
  mutate(d)
  with pytest.raises(ValueError, match=message):
    ox.from_config(d)


def test_plain_config_needs_a_class_name():
  with pytest.raises(ValueError, match="class_name"):
    ox.from_config(ox.get_config(ox.adam())["config"])


@pytest.mark.parametrize("make, message", [
    (lambda: ox.adam(weight_decay=0.1, weight_decay_mask=lambda p: p),
     "weight_decay_mask"),
    (lambda: ox.adam(optax.linear_schedule(0.1, 0.0, 10)), "learning_rate"),
    (lambda: ox.adam(lambda: 0.1), "learning_rate"),
    (lambda: optax.adam(0.1), "opt"),
    (lambda: ox.inject_hyperparams(ox.adam)(0.1), "opt"),
])
def test_get_config_refuses_what_has_no_json_form(make, message):
  with pytest.raises(ValueError, match=message):
    ox.get_config(make())


OWN_ARGUMENTS = {
    "Ftrl": (ox.ftrl, dict(learning_rate=0.25, learning_rate_power=-0.2,
                           initial_accumulator_value=0.5,
                           l1_regularization_strength=0.1,
                           l2_regularization_strength=0.2,
                           l2_shrinkage_regularization_strength=0.3,
                           beta=0.4, clipnorm=1.0)),
    "Adafactor": (ox.adafactor, dict(learning_rate=0.5, beta_2_decay=-0.6,
                                     epsilon_1=1e-20, epsilon_2=0.01,
                                     clip_threshold=2.0, relative_step=False,
                                     weight_decay=0.1)),
}


@pytest.mark.parametrize("class_name", sorted(OWN_ARGUMENTS))
def test_get_config_is_keras_serialize_with_own_arguments(class_name):
  """Every own argument away from its default, in Keras's key order.

  (Keras writes its learning-rate variable's float32 value: 0.25 is exact.)
  """
  factory, kw = OWN_ARGUMENTS[class_name]
  ours = ox.get_config(factory(**kw, name="opt"))
  theirs = keras.optimizers.serialize(
      getattr(keras.optimizers, class_name)(**kw, name="opt"))
  assert ours == theirs
  assert list(ours["config"]) == list(theirs["config"])
  assert ox.get_config(ox.from_config(theirs)) == theirs
