"""``optax_suite.schedules`` against ``keras.optimizers.schedules``.

Every schedule is evaluated at the steps where its formula changes regime
(0, 1, each boundary / period end / restart / warmup end and its neighbours,
far past the decay) and compared with the Keras schedule called on the same
Python-int step: eagerly, under ``jax.jit`` with a traced int32 step, and
under ``jax.vmap`` over an int32 array of steps. The module also checks the
factories' signatures, ``get_config``/``serialize``/``from_config`` round trips
in both directions with Keras, construction-time validation messages, and use
as an optax learning rate (``optax.sgd``, ``optax.inject_hyperparams``).

Tolerances (float32 eps = 2**-23 ~ 1.2e-7):

* Eager: bitwise. The schedules repeat Keras's float32 operations in Keras's
  order, so op by op they run the same XLA kernels on the same values; any
  reordering or a float64 intermediate (e.g. ``1 - alpha``) shows up here.
* ``jax.jit`` / ``jax.vmap`` / Keras's own compiled ``lax.cond``: XLA fuses
  the operations, and fused ``pow``/``cos``/``log`` kernels may differ from
  the unfused ones by a few ulps (up to 10 ulps, relative 1.1e-6, seen here).
  ``RTOL = 1e-5`` (~100 ulps) covers that; values near zero come from
  cancellation in ``1 + cos(pi c)``, where an ulp of the cosine is ~eps of the
  schedule's peak, hence ``ATOL = 1e-6 * peak``. A wrong boundary side,
  restart index or staircase step is off by percents, far outside both.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import dataclasses  # noqa: E402
import functools  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402

from optax_suite import schedules  # noqa: E402

KS = keras.optimizers.schedules
RTOL = 1e-5
ATOL_REL_TO_PEAK = 1e-6

FACTORIES = {
    "ExponentialDecay": schedules.exponential_decay,
    "PiecewiseConstantDecay": schedules.piecewise_constant_decay,
    "PolynomialDecay": schedules.polynomial_decay,
    "InverseTimeDecay": schedules.inverse_time_decay,
    "CosineDecay": schedules.cosine_decay,
    "CosineDecayRestarts": schedules.cosine_decay_restarts,
}


def _around(*points):
    """Each point and its two neighbours, non-negative, sorted."""
    return sorted({s for p in points for s in (p - 1, p, p + 1) if s >= 0})


# id -> (Keras class name, args, kwargs, steps). Step lists always contain 0.
CASES = {
    "exp": ("ExponentialDecay", (0.1, 10, 0.9), {},
            _around(0, 10, 100) + [15, 1000, 10**6]),
    "exp-staircase": ("ExponentialDecay", (0.1, 7, 0.3), {"staircase": True},
                      _around(0, 7, 14, 70) + [10**5]),
    "exp-slow": ("ExponentialDecay", (1e-3, 1000, 0.96), {},
                 _around(0, 1000) + [691, 10**5, 2**24 + 3]),
    "exp-growing-staircase": ("ExponentialDecay", (0.01, 5, 1.5),
                              {"staircase": True, "name": "up"},
                              _around(0, 5, 50)),
    "inverse": ("InverseTimeDecay", (0.1, 7, 0.5), {},
                _around(0, 7, 70) + [10**6]),
    "inverse-staircase": ("InverseTimeDecay", (0.1, 7, 0.5),
                          {"staircase": True}, _around(0, 7, 14, 70)),
    "inverse-float-steps": ("InverseTimeDecay", (0.5, 2.5, 2.0), {},
                            _around(0, 5, 10) + [10**4]),
    "poly": ("PolynomialDecay", (0.1, 30), {}, _around(0, 30) + [15, 300]),
    "poly-sqrt": ("PolynomialDecay", (0.1, 30, 0.01, 0.5), {},
                  _around(0, 30) + [7, 22, 10**5]),
    "poly-cycle": ("PolynomialDecay", (0.1, 30, 0.01, 2.0, True), {},
                   _around(0, 30, 60, 90) + [3000]),
    "poly-cycle-frac": ("PolynomialDecay", (0.3, 7, 0.003, 1.7, True), {},
                        _around(0, 7, 14, 700)),
    "cosine": ("CosineDecay", (0.1, 30), {}, _around(0, 15, 30) + [10**6]),
    "cosine-alpha": ("CosineDecay", (0.1, 30, 0.1), {},
                     _around(0, 15, 30) + [500]),
    "cosine-warmup-from-0": ("CosineDecay", (0.0, 30, 0.1),
                             {"warmup_target": 0.3, "warmup_steps": 7},
                             _around(0, 3, 7, 22, 37) + [1000]),
    "cosine-warmup": ("CosineDecay", (0.01, 33, 0.07),
                      {"warmup_target": 0.1, "warmup_steps": 10},
                      _around(0, 10, 26, 43) + [10**5]),
    "cosine-warmup-0-steps": ("CosineDecay", (0.01, 33, 0.07),
                              {"warmup_target": 0.1, "warmup_steps": 0},
                              _around(0, 33) + [200]),
    "cosine-no-target": ("CosineDecay", (0.1, 20, 0.0, "c", None, 5), {},
                         _around(0, 5, 20)),
    "restarts": ("CosineDecayRestarts", (0.1, 10), {},
                 _around(0, 10, 30, 70, 150, 310, 81910) + [5, 10**5]),
    "restarts-t1": ("CosineDecayRestarts", (0.1, 10, 1.0, 0.5, 0.1), {},
                    _around(0, 10, 20, 30) + [5, 1000]),
    "restarts-t1.5": ("CosineDecayRestarts", (0.1, 7, 1.5, 0.9, 0.05), {},
                      _around(0, 7, 17, 18, 33, 34) + [1000]),
    "restarts-t3": ("CosineDecayRestarts", (0.1, 3, 3.0, 0.7, 0.0), {},
                    _around(0, 3, 12, 39, 120, 363)),
    "restarts-alpha": ("CosineDecayRestarts", (0.2, 5),
                       {"t_mul": 2.0, "m_mul": 0.8, "alpha": 0.2},
                       _around(0, 5, 15, 35, 75) + [10**4]),
    "piecewise": ("PiecewiseConstantDecay",
                  ([10, 20, 35], [1.0, 0.5, 0.1, 0.01]), {},
                  _around(0, 10, 20, 35) + [10**6]),
    "piecewise-float-bounds": ("PiecewiseConstantDecay",
                               ([10.5, 20.7], [0.3, 0.2, 0.1]), {},
                               _around(0, 10, 11, 20, 21)),
    "piecewise-single": ("PiecewiseConstantDecay",
                         ([100000], [0.05, 0.001]), {"name": "one"},
                         _around(0, 100000)),
}


def _keras(case_id):
    class_name, args, kwargs, _ = CASES[case_id]
    return getattr(KS, class_name)(*args, **kwargs)


def _ours(case_id):
    class_name, args, kwargs, _ = CASES[case_id]
    return FACTORIES[class_name](*args, **kwargs)


@functools.lru_cache(maxsize=None)
def _keras_values(case_id):
    """Keras's values at the case's steps, each step a Python int.

    Run op by op under ``jax.disable_jit``: Keras's ``ops.cond`` otherwise
    compiles a fresh ``lax.cond`` on every call (~0.3 s each), and op by op
    is how Keras evaluates everything outside those conds anyway.
    ``test_compiled_keras_cond`` checks the compiled path at its key steps.
    """
    sched = _keras(case_id)
    with jax.disable_jit():
        values = [np.asarray(sched(int(s))) for s in CASES[case_id][3]]
    assert all(v.dtype == np.float32 for v in values)
    return np.array(values, np.float32)


def _assert_close(actual, expected):
    actual = np.asarray(actual)
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    peak = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(
        actual, expected, rtol=RTOL, atol=ATOL_REL_TO_PEAK * peak
    )


@functools.partial(jax.jit, static_argnums=0)
def _vmapped(schedule, steps):
    # The schedule is a static (hashed) argument: equal schedules share one
    # compilation.
    return jax.vmap(schedule)(steps)


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_parity_eager_bitwise(case_id):
    sched = _ours(case_id)
    values = [sched(int(s)) for s in CASES[case_id][3]]
    assert all(v.shape == () and v.dtype == jnp.float32 for v in values)
    np.testing.assert_array_equal(np.array(values), _keras_values(case_id))


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_parity_jit_traced_int32_step(case_id):
    sched = _ours(case_id)
    traced_types = []

    def lr_at(step):
        traced_types.append(step)
        return sched(step)

    jitted = jax.jit(lr_at)
    values = [jitted(jnp.int32(s)) for s in CASES[case_id][3]]
    assert len(traced_types) == 1  # traced once, for all the steps
    assert isinstance(traced_types[0], jax.core.Tracer)
    assert traced_types[0].dtype == jnp.int32
    _assert_close(np.array(values), _keras_values(case_id))


@pytest.mark.parametrize("case_id", ["exp", "exp-slow", "exp-staircase",
                                     "inverse", "inverse-float-steps",
                                     "cosine", "cosine-warmup-from-0"])
def test_parity_jit_bitwise_without_fused_transcendentals(case_id):
    # Divisions, powers and products only: with the hyperparameters kept as
    # runtime values (an optimisation barrier), XLA cannot rewrite ``t / T``
    # as ``t * (1 / T)`` or fold constants, so jit is bit-identical to Keras.
    steps = jnp.asarray(CASES[case_id][3], jnp.int32)
    np.testing.assert_array_equal(np.asarray(_vmapped(_ours(case_id), steps)),
                                  _keras_values(case_id))


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_parity_vmap_over_steps(case_id):
    steps = jnp.asarray(CASES[case_id][3], jnp.int32)
    _assert_close(_vmapped(_ours(case_id), steps), _keras_values(case_id))


# (case, steps): the steps where Keras's compiled ``lax.cond`` decides the
# branch: warmup end and restart points.
COMPILED_COND_STEPS = {
    "cosine-warmup": (10, 11),
    "restarts": (30, 81910),
    "restarts-t1.5": (18,),
    "restarts-t1": (20,),
}


@pytest.mark.parametrize("case_id", sorted(COMPILED_COND_STEPS))
def test_compiled_keras_cond(case_id):
    keras_sched, ours = _keras(case_id), _ours(case_id)
    steps = COMPILED_COND_STEPS[case_id]
    expected = np.array([np.asarray(keras_sched(s)) for s in steps])
    _assert_close(np.array([ours(s) for s in steps]), expected)
    _assert_close(_vmapped(ours, jnp.asarray(steps)), expected)


def test_steps_are_in_each_regime():
    # Guards the parity cases themselves: they must reach the interesting
    # values (restart to the full rate, the end of warmup, the floor).
    def value(case_id, step):
        return _keras_values(case_id)[CASES[case_id][3].index(step)]

    np.testing.assert_allclose(value("restarts", 30), 0.1, rtol=1e-6)
    np.testing.assert_allclose(value("restarts", 29), 0.1 * 0.5 * (
        1 + np.cos(np.pi * 19 / 20)), rtol=1e-5)
    # Keras's float32 log puts the 13th restart (step 81910 = 10 * (2**13 - 1))
    # one step late: log(8192) / log(2) rounds to just under 13.
    assert value("restarts", 81910) == 0.0
    np.testing.assert_allclose(value("restarts", 81911), 0.1, rtol=1e-4)
    np.testing.assert_allclose(value("cosine-warmup", 10), 0.1, rtol=1e-6)
    np.testing.assert_allclose(value("cosine-warmup", 10**5), 0.007,
                               rtol=1e-5)
    np.testing.assert_allclose(value("poly-cycle", 60), 0.01, rtol=1e-6)
    np.testing.assert_allclose(value("poly-cycle", 61), 0.01 + 0.09 * (
        1 - 61 / 90) ** 2, rtol=1e-5)
    assert value("piecewise-float-bounds", 10) == np.float32(0.3)
    assert value("piecewise-float-bounds", 11) == np.float32(0.2)
    assert value("piecewise-float-bounds", 20) == np.float32(0.2)


def test_piecewise_float_step_compares_as_float():
    # Keras compares in the step's dtype: an int step truncates the float
    # boundary 10.5 to 10, a float step does not.
    k = KS.PiecewiseConstantDecay([10.5, 20.7], [0.3, 0.2, 0.1])
    ours = schedules.piecewise_constant_decay([10.5, 20.7], [0.3, 0.2, 0.1])
    for step in (10.4, 10.5, 10.6, 20.6, 20.7, 20.8, 10, 11, 20, 21):
        assert float(ours(step)) == float(k(step)), step
    assert float(ours(10.6)) == np.float32(0.2)
    assert float(ours(10)) == np.float32(0.3)


@pytest.mark.parametrize("case_id", ["poly-cycle", "poly-cycle-frac",
                                     "restarts"])
def test_array_of_steps_matches_scalar_steps(case_id):
    # XLA's vectorised float32 division on CPU is not correctly rounded; at
    # exact multiples ``floor``/``ceil`` must still land where a scalar step
    # (IEEE division, as in Keras) puts them, so that only ulps differ.
    sched = _ours(case_id)
    steps = jnp.arange(0, 1000, dtype=jnp.int32)
    one_at_a_time = np.asarray(jax.jit(lambda s: jax.lax.map(sched, s))(steps))
    _assert_close(sched(steps), one_at_a_time)
    _assert_close(_vmapped(sched, steps), one_at_a_time)


INT_CASES = [
    ("ExponentialDecay", (1, 10, 0.5)),
    ("InverseTimeDecay", (2, 10, 0.5)),
    ("PolynomialDecay", (1, 10, 0.5, 1.5)),
    ("CosineDecay", (1, 10, 0.5)),
    ("CosineDecay", (1, 10, 0.0, "w", 0.1, 5)),
    ("CosineDecayRestarts", (1, 10, 2.0, 0.5, 0.5)),
    ("PiecewiseConstantDecay", ([5, 8], [3, 2, 1])),
]


@pytest.mark.parametrize("class_name,args", INT_CASES)
def test_int_arguments_compute_in_float32(class_name, args):
    # Keras computes in the dtype of ``initial_learning_rate`` (of
    # ``values[0]``): a Python int there makes it cast the other arguments,
    # and even pi, to int32 (0.5 -> 0, 0.1 -> 0, pi -> 3). Ours always
    # computes in float32, i.e. like Keras given the same numbers as floats,
    # while the config keeps the ints as given.
    def floats(a):
        if isinstance(a, list):
            return [float(x) for x in a]
        return float(a) if isinstance(a, int) else a

    ours = FACTORIES[class_name](*args)
    keras_float = getattr(KS, class_name)(*[floats(a) for a in args])
    steps = (0, 3, 5, 6, 9, 10, 20)
    with jax.disable_jit():
        expected = np.array([np.asarray(keras_float(s)) for s in steps])
    np.testing.assert_array_equal(np.array([ours(s) for s in steps]),
                                  expected)
    assert ours.get_config() == getattr(KS, class_name)(*args).get_config()


# ---------------------------------------------------------------------------
# Signatures, configs and serialisation.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("class_name", sorted(FACTORIES))
def test_signature_matches_keras(class_name):
    def described(fn):
        params = list(inspect.signature(fn).parameters.values())
        return [(p.name, p.kind, p.default) for p in params]

    assert described(FACTORIES[class_name]) == described(
        getattr(KS, class_name))


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_get_config_and_serialize_match_keras(case_id):
    ours, theirs = _ours(case_id), _keras(case_id)
    assert list(ours.get_config().items()) == list(theirs.get_config().items())
    assert schedules.serialize(ours) == KS.serialize(theirs)
    assert type(ours).keras_class_name == KS.serialize(theirs)["class_name"]
    assert json.loads(json.dumps(schedules.serialize(ours))) == (
        schedules.serialize(ours))


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_round_trip_ours(case_id):
    ours = _ours(case_id)
    steps = jnp.asarray(CASES[case_id][3], jnp.int32)
    via_json = json.loads(json.dumps(schedules.serialize(ours)))
    for rebuilt in (
        schedules.from_config(via_json),
        schedules.from_config(ours.get_config(), ours.keras_class_name),
        schedules.from_config(via_json, ours.keras_class_name),
    ):
        assert type(rebuilt) is type(ours)
        assert rebuilt == ours and hash(rebuilt) == hash(ours)
        np.testing.assert_array_equal(np.asarray(_vmapped(rebuilt, steps)),
                                      np.asarray(_vmapped(ours, steps)))


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_keras_serialize_to_ours(case_id):
    serialized = json.loads(json.dumps(KS.serialize(_keras(case_id))))
    rebuilt = schedules.from_config(serialized)
    assert rebuilt == _ours(case_id)
    values = [rebuilt(int(s)) for s in CASES[case_id][3]]
    _assert_close(np.array(values), _keras_values(case_id))


@pytest.mark.parametrize("case_id", ["exp-staircase", "poly-cycle",
                                     "cosine-warmup", "restarts-t1.5",
                                     "piecewise-float-bounds", "inverse"])
def test_ours_to_keras_deserialize(case_id):
    ours = _ours(case_id)
    theirs = KS.deserialize(schedules.serialize(ours))
    assert type(theirs) is getattr(KS, ours.keras_class_name)
    assert theirs.get_config() == ours.get_config()
    also = getattr(KS, ours.keras_class_name).from_config(ours.get_config())
    assert also.get_config() == ours.get_config()
    with jax.disable_jit():
        for step in (0, 11, 70):
            _assert_close(np.asarray(ours(step))[None],
                          np.asarray(theirs(step), np.float32)[None])


def test_numpy_and_jax_scalars_become_python_numbers():
    sched = schedules.exponential_decay(np.float32(0.1), np.int64(10),
                                        jnp.float32(0.5), np.bool_(True))
    config = sched.get_config()
    # As keras.optimizers.schedules.serialize writes np.float32(0.1).
    assert config == {"initial_learning_rate": 0.10000000149011612,
                      "decay_steps": 10, "decay_rate": 0.5, "staircase": True,
                      "name": "ExponentialDecay"}
    assert [type(config[k]) for k in config] == [float, int, float, bool, str]
    assert KS.serialize(KS.ExponentialDecay(np.float32(0.1), 10, 0.5))[
        "config"]["initial_learning_rate"] == 0.10000000149011612
    assert json.loads(json.dumps(config)) == config
    assert hash(sched) == hash(schedules.exponential_decay(
        0.10000000149011612, 10, 0.5, True))


# ---------------------------------------------------------------------------
# JAX / optax integration.
# ---------------------------------------------------------------------------


def test_frozen_hashable_static_argument():
    sched = schedules.cosine_decay_restarts(0.1, 10)
    assert hash(sched) == hash(schedules.cosine_decay_restarts(0.1, 10))
    assert sched != schedules.cosine_decay_restarts(0.1, 11)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sched.alpha = 0.5

    @functools.partial(jax.jit, static_argnums=0)
    def lr(schedule, step):
        return schedule(step)

    assert float(lr(sched, 30)) == pytest.approx(0.1)
    assert float(lr(schedules.exponential_decay(0.1, 10, 0.5), 10)) == (
        pytest.approx(0.05))


def test_optax_sgd_and_inject_hyperparams():
    sched = schedules.piecewise_constant_decay([2, 4], [1.0, 0.5, 0.25])
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.full(3, 2.0)}

    sgd = optax.sgd(learning_rate=sched)
    injected = optax.inject_hyperparams(optax.sgd)(learning_rate=sched)
    sgd_state, inj_state = sgd.init(params), injected.init(params)

    @jax.jit
    def step(sgd_state, inj_state):
        u1, sgd_state = sgd.update(grads, sgd_state, params)
        u2, inj_state = injected.update(grads, inj_state, params)
        return u1, u2, sgd_state, inj_state

    for count in range(7):
        expected_lr = float(sched(count))
        u1, u2, sgd_state, inj_state = step(sgd_state, inj_state)
        np.testing.assert_array_equal(u1["w"], -2.0 * np.float32(expected_lr))
        np.testing.assert_array_equal(u2["w"], u1["w"])
    assert float(inj_state.hyperparams["learning_rate"]) == 0.25


def test_traced_hyperparameters_skip_validation():
    def lr_at_10(initial_learning_rate, decay_rate):
        sched = schedules.exponential_decay(initial_learning_rate, 10,
                                            decay_rate)
        return sched(10)

    rates = jnp.array([0.1, 0.2, 0.4])
    np.testing.assert_allclose(jax.vmap(lr_at_10, (0, None))(rates, 0.5),
                               rates * 0.5, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(lr_at_10)(0.1, 0.25), 0.025,
                               rtol=1e-6)
    # t_mul traced: both branches are computed and selected at run time.
    restart = jax.jit(lambda t_mul, step: schedules.cosine_decay_restarts(
        0.1, 10, t_mul)(step))
    for t_mul in (1.0, 2.0):
        ref = schedules.cosine_decay_restarts(0.1, 10, t_mul)
        for step in (5, 10, 25, 30):
            assert float(restart(t_mul, step)) == pytest.approx(
                float(ref(step)), rel=RTOL)


# ---------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------

BAD = [
    (schedules.exponential_decay, (0.1, 0, 0.5), {},
     "Argument `decay_steps` must be > 0. Received: decay_steps=0"),
    (schedules.exponential_decay, (-0.1, 10, 0.5), {},
     "Argument `initial_learning_rate` must be >= 0. "
     "Received: initial_learning_rate=-0.1"),
    (schedules.exponential_decay, (float("nan"), 10, 0.5), {},
     "Argument `initial_learning_rate` must be finite. "
     "Received: initial_learning_rate=nan"),
    (schedules.exponential_decay, (0.1, 10, -0.5), {},
     "Argument `decay_rate` must be >= 0. Received: decay_rate=-0.5"),
    (schedules.exponential_decay, (0.1, 10, 0.5), {"staircase": "yes"},
     "Argument `staircase` must be a Python bool. Received: staircase='yes'"),
    (schedules.exponential_decay, (0.1, 10, 0.5), {"name": 3},
     "Argument `name` must be a string or None. Received: name=3"),
    (schedules.exponential_decay, (np.array([0.1, 0.2]), 10, 0.5), {},
     "Argument `initial_learning_rate` must be a scalar."),
    (schedules.inverse_time_decay, (0.1, float("inf"), 0.5), {},
     "Argument `decay_steps` must be finite. Received: decay_steps=inf"),
    (schedules.inverse_time_decay, (0.1, True, 0.5), {},
     "Argument `decay_steps` must be a real number. Received: "
     "decay_steps=True"),
    (schedules.polynomial_decay, (0.1, -3), {},
     "Argument `decay_steps` must be > 0. Received: decay_steps=-3"),
    (schedules.polynomial_decay, (0.1, 10), {"power": -1.0},
     "Argument `power` must be >= 0. Received: power=-1.0"),
    (schedules.polynomial_decay, (0.1, 10), {"end_learning_rate": "0.1"},
     "Argument `end_learning_rate` must be a real number. "
     "Received: end_learning_rate='0.1'"),
    (schedules.polynomial_decay, (0.1, 10), {"cycle": 1},
     "Argument `cycle` must be a Python bool. Received: cycle=1"),
    (schedules.cosine_decay, (0.1, 10), {"warmup_steps": -1},
     "Argument `warmup_steps` must be >= 0. Received: warmup_steps=-1"),
    (schedules.cosine_decay, (0.1, 10), {"warmup_target": float("inf")},
     "Argument `warmup_target` must be finite. Received: warmup_target=inf"),
    (schedules.cosine_decay, (0.1, 10), {"alpha": 1.5},
     "Argument `alpha` must be <= 1. Received: alpha=1.5"),
    (schedules.cosine_decay, (0.1, 0.0), {},
     "Argument `decay_steps` must be > 0. Received: decay_steps=0.0"),
    (schedules.cosine_decay_restarts, (0.1, 0), {},
     "Argument `first_decay_steps` must be > 0. Received: "
     "first_decay_steps=0"),
    (schedules.cosine_decay_restarts, (0.1, 10), {"t_mul": 0.0},
     "Argument `t_mul` must be > 0. Received: t_mul=0.0"),
    (schedules.cosine_decay_restarts, (0.1, 10), {"m_mul": -0.5},
     "Argument `m_mul` must be >= 0. Received: m_mul=-0.5"),
    (schedules.cosine_decay_restarts, (0.1, 10), {"alpha": -0.1},
     "Argument `alpha` must be >= 0. Received: alpha=-0.1"),
    (schedules.piecewise_constant_decay, ([10, 20], [1.0, 0.5]), {},
     "The length of boundaries should be 1 less than the length of values. "
     "Received: boundaries=[10, 20] of length 2, and values=[1.0, 0.5] of "
     "length 2."),
    (schedules.piecewise_constant_decay, ([], [1.0]), {},
     "Argument `boundaries` must contain at least one boundary. "
     "Received: boundaries=[]"),
    (schedules.piecewise_constant_decay, ([10, 10], [1.0, 0.5, 0.1]), {},
     "Argument `boundaries` must be strictly increasing. Received: "
     "boundaries=[10, 10] (boundaries[0]=10 >= boundaries[1]=10)"),
    (schedules.piecewise_constant_decay, ([10, 20], [1.0, -0.5, 0.1]), {},
     "Argument `values[1]` must be >= 0. Received: values[1]=-0.5"),
    (schedules.piecewise_constant_decay, ([10, float("nan")], [1., .5, .1]),
     {}, "Argument `boundaries[1]` must be finite. Received: "
     "boundaries[1]=nan"),
    (schedules.piecewise_constant_decay, (10, [1.0, 0.5]), {},
     "Argument `boundaries` must be a list of numbers. Received: "
     "boundaries=10"),
]


@pytest.mark.parametrize("factory,args,kwargs,message", BAD,
                         ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_arguments(factory, args, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        factory(*args, **kwargs)


@pytest.mark.parametrize("class_name,args", [
    ("ExponentialDecay", (0.1, 0, 0.5)),
    ("InverseTimeDecay", (0.1, -2, 0.5)),
    ("PolynomialDecay", (0.1, 0)),
    ("CosineDecay", (0.1, -1.5)),
    ("CosineDecayRestarts", (0.1, 0)),
    ("PiecewiseConstantDecay", ([1, 2], [0.1, 0.2])),
])
def test_same_message_as_keras_where_keras_validates(class_name, args):
    with pytest.raises(ValueError) as keras_error:
        getattr(KS, class_name)(*args)
    with pytest.raises(ValueError) as our_error:
        FACTORIES[class_name](*args)
    assert str(our_error.value) == str(keras_error.value)


BAD_CONFIGS = [
    ({"class_name": "StepDecay", "config": {}}, None,
     "Unknown schedule class name. Expected one of ['CosineDecay', "
     "'CosineDecayRestarts', 'ExponentialDecay', 'InverseTimeDecay', "
     "'PiecewiseConstantDecay', 'PolynomialDecay']. "
     "Received: class_name='StepDecay'"),
    ({"initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.5},
     "PiecewiseConstant",
     "Unknown schedule class name."),
    ({"initial_learning_rate": 0.1, "decay_steps": 10, "decay_rate": 0.5,
      "decay": 0.9}, "ExponentialDecay",
     "Unknown config key 'decay' for ExponentialDecay. Expected keys from "
     "['initial_learning_rate', 'decay_steps', 'decay_rate', 'staircase', "
     "'name']. Received: decay=0.9"),
    ({"class_name": "CosineDecay", "config": {
        "initial_learning_rate": 0.1, "decay_steps": 10, "warmup": 5}}, None,
     "Unknown config key 'warmup' for CosineDecay."),
    ({"initial_learning_rate": 0.1, "decay_steps": 10}, None,
     "Argument `class_name` is required for a plain config dict"),
    ({"class_name": "CosineDecay", "config": {}, "shared_object_id": 3}, None,
     "Unknown key 'shared_object_id' in serialized schedule. "
     "Expected only ['module', 'class_name', 'config', 'registered_name']. "
     "Received: shared_object_id=3"),
    ({"class_name": "CosineDecay", "config": {"initial_learning_rate": 0.1}},
     None, "Missing required config key 'decay_steps' for CosineDecay."),
    ({"class_name": "CosineDecay", "config": {}}, "ExponentialDecay",
     "Argument `class_name` does not match the serialized class_name. "
     "Received: class_name='ExponentialDecay' and "
     "config['class_name']='CosineDecay'"),
    ({"class_name": "CosineDecay"}, None,
     "Serialized schedule has no 'config' entry."),
    ([("class_name", "CosineDecay")], None,
     "Argument `config` must be a dict."),
    ({"class_name": "CosineDecay", "config": {
        "initial_learning_rate": 0.1, "decay_steps": -10}}, None,
     "Argument `decay_steps` must be > 0. Received: decay_steps=-10"),
]


@pytest.mark.parametrize("config,class_name,message", BAD_CONFIGS,
                         ids=[f"badconfig{i}" for i in range(len(BAD_CONFIGS))])
def test_bad_configs(config, class_name, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        schedules.from_config(config, class_name)


def test_serialize_rejects_other_callables():
    with pytest.raises(ValueError, match=re.escape(
            "Argument `schedule` must be a schedule from this module. "
            "Received: schedule=<function")):
        schedules.serialize(lambda step: 0.1)
    with pytest.raises(ValueError, match="Argument `schedule` must be"):
        schedules.serialize(optax.constant_schedule(0.1))


def test_public_names():
    """One public form: the snake_case factories (no classes)."""
    expected = {
        "exponential_decay", "piecewise_constant_decay", "polynomial_decay",
        "inverse_time_decay", "cosine_decay", "cosine_decay_restarts",
        "from_config", "serialize",
    }
    assert set(schedules.__all__) == expected
    public = {n for n in dir(schedules)
              if n.isidentifier() and not n.startswith("_")}
    assert public == expected
    for name in expected:
        obj = getattr(schedules, name)
        assert callable(obj), name
        assert obj.__module__.startswith("optax_suite._schedules"), name
