"""Hostile input, case by case: bad arguments, bad trees, bad gradients.

Every invalid constructor argument of SPEC section 4 fails at construction
with a ValueError naming the argument and the value; grads that do not fit
the params, and a missing `params`, fail at `update` and say why; NaN, Inf
and huge gradients do what Keras does without loss scaling (compared with
Keras itself) and are skipped with it. BUILD.md's "Bad input" table lists
each case with the test here that checks it.
"""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optax_suite as ox
from catalog import CATALOG
from catalog import KINDS
from helpers import keras_ls_trajectory
from helpers import ours_ls_trajectory
from helpers import poison
from keras_oracle import assert_trajectories_match
from keras_oracle import keras_trajectory
from keras_oracle import make_params
from keras_oracle import max_deviation
from keras_oracle import ours_trajectory
from keras_oracle import varied_grads

FACTORIES = {kind: getattr(ox, kind) for kind in KINDS}
NAN, INF = float("nan"), float("inf")

# (argument, bad values) common to every factory.
BASE_BAD = [
    ("learning_rate", [-0.1, -1, NAN, INF, -INF, "0.1", None, True]),
    ("weight_decay", [-0.004, NAN, INF]),
    ("clipnorm", [-1.0, NAN, INF]),
    ("clipvalue", [-0.5, NAN, INF]),
    ("global_clipnorm", [-1.0, NAN, INF]),
    ("gradient_accumulation_steps", [1, 0, -2, 2.0, 2.5, True, "4"]),
    ("ema_momentum", [-0.01, 1.01, NAN, INF, "0.9"]),
    ("ema_overwrite_frequency", [0, -1, 2.5, 3.0, True, "3"]),
    ("loss_scale_factor", [0.0, -2.0, NAN, INF]),
]
# Arguments of the rules, by factory: each catalog entry's `bad_own`.
RULE_BAD = {kind: list(CATALOG[kind].bad_own) for kind in KINDS}
CASES = [(kind, arg, value) for kind in FACTORIES
         for arg, values in BASE_BAD + RULE_BAD[kind] for value in values]


@pytest.mark.parametrize("kind,arg,value", CASES)
def test_bad_argument_named_with_its_value(kind, arg, value):
  """Construction fails with a ValueError naming `arg=value`."""
  with pytest.raises(ValueError, match=re.escape(f"{arg}={value!r}")):
    FACTORIES[kind](**{arg: value})


@pytest.mark.parametrize("kind", list(FACTORIES))
@pytest.mark.parametrize("clips", [
    dict(clipnorm=1.0, clipvalue=1.0), dict(clipnorm=1.0, global_clipnorm=1.0),
    dict(clipvalue=0.5, global_clipnorm=1.0),
    dict(clipnorm=1.0, clipvalue=1.0, global_clipnorm=1.0)])
def test_two_clips_at_once(kind, clips):
  """More than one clipping option fails, naming all three values."""
  with pytest.raises(ValueError, match="Only one of") as info:
    FACTORIES[kind](**clips)
  for name in ("clipnorm", "clipvalue", "global_clipnorm"):
    assert f"{name}={clips.get(name)}" in str(info.value)


@pytest.mark.fast_cases(1)
@pytest.mark.parametrize("kind", list(FACTORIES))
def test_int_learning_rate_accepted(kind):
  """An int learning rate works (Keras refuses it) and equals the float."""
  params = make_params()
  grads = varied_grads(params, 1)[0]
  outs = []
  for lr in (1, 1.0):
    opt = FACTORIES[kind](learning_rate=lr)
    outs.append(opt.update(grads, opt.init(params), params)[0])
  assert max_deviation([outs[0]], [outs[1]]) == 0.0


@pytest.mark.parametrize("kind", list(FACTORIES))
@pytest.mark.parametrize("value", [0.0, 0, 1e30, np.float32(0.5),
                                   jnp.asarray(0.5)])
def test_edge_values_accepted(kind, value):
  """Zero, huge and array-valued learning rates are valid."""
  FACTORIES[kind](learning_rate=value).init(jnp.ones(2))


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_edge_arguments_accepted(kind):
  """The closed ends of each interval are valid: 0 everywhere, 1 for EMA."""
  rule = CATALOG[kind].edge_own
  opt = FACTORIES[kind](weight_decay=0.0, clipnorm=0.0,
                        use_ema=True, ema_momentum=1.0,
                        ema_overwrite_frequency=1,
                        gradient_accumulation_steps=2, **rule)
  opt.init(jnp.ones(2))
  FACTORIES[kind](ema_momentum=0.0, clipvalue=0.0)
  FACTORIES[kind](global_clipnorm=0.0, ema_overwrite_frequency=np.int64(2))


def _structure_mismatches():
  params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}}
  return params, [
      {"dense": {"kernel": jnp.ones((2, 2))}},  # a leaf missing
      {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2),
                 "extra": jnp.ones(1)}},  # a leaf too many
      [jnp.ones((2, 2)), jnp.ones(2)],  # another container
      {"dense": {"kernel": jnp.ones((2, 2)), "bias": None}},  # None for leaf
  ]


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_grads_structure_mismatch_shows_both(kind):
  """Grads unlike params: a ValueError printing both tree structures."""
  params, bad = _structure_mismatches()
  opt = FACTORIES[kind]()
  state = opt.init(params)
  for grads in bad:
    with pytest.raises(ValueError) as info:
      opt.update(grads, state, params)
    message = str(info.value)
    assert str(jax.tree.structure(params)) in message
    assert str(jax.tree.structure(grads)) in message
    with pytest.raises(ValueError, match="structure"):  # under jit too
      jax.jit(opt.update)(grads, state, params)
    with pytest.raises(ValueError, match="structure"):  # and loss scaling
      ls = ox.loss_scale_optimizer(opt)
      ls.update(grads, ls.init(params), params)


@pytest.mark.parametrize("kind", list(FACTORIES))
def test_grads_structure_mismatch_without_params(kind):
  """Without `params` the grads meet the slots: still a ValueError."""
  params, bad = _structure_mismatches()
  opt = FACTORIES[kind]()
  state = opt.init(params)
  for grads in bad[:3]:
    with pytest.raises(ValueError):
      opt.update(grads, state)


@pytest.mark.parametrize("kind", list(FACTORIES))
@pytest.mark.parametrize("options,needed", [
    (dict(weight_decay=0.01), "weight decay"),
    (dict(use_ema=True), "EMA"),
    (dict(use_ema=True, weight_decay=0.01, gradient_accumulation_steps=2),
     "weight decay"),
])
def test_params_left_out(kind, options, needed):
  """`update` without params, when decay or EMA needs them, says so."""
  params = {"w": jnp.ones(3)}
  if kind == "muon" and "weight_decay" not in options:
    # Muon decays by default (0.004 on both branches), as Keras's.
    options = dict(options, weight_decay=None, adam_weight_decay=None)
  opt = FACTORIES[kind](**options)
  if kind == "adamw":  # AdamW always decays (0.004 by default).
    needed = "weight decay"
  state = opt.init(params)
  for update in (opt.update, jax.jit(opt.update)):
    with pytest.raises(ValueError, match=f"`params` must be passed.*{needed}"):
      update({"w": jnp.ones(3)}, state)
  ls = ox.loss_scale_optimizer(opt)
  with pytest.raises(ValueError, match=f"`params` must be passed.*{needed}"):
    ls.update({"w": jnp.ones(3)}, ls.init(params))


def hostile(params, steps=25, seed=0, huge=True):
  """Varied grads with one NaN (step 3), one -Inf (step 8), 1e30 (step 13)."""
  seq = varied_grads(params, steps, seed=seed)
  seq[3] = poison(seq[3], NAN, leaf_index=0)
  seq[8] = poison(seq[8], -INF, leaf_index=1)
  if huge:
    seq[13] = poison(seq[13], 1e30, leaf_index=2)
  return seq


# What each configuration does without loss scaling; BUILD.md's table says
# it in words.
NO_SCALING = [
    ("adam", dict(learning_rate=0.01)),
    ("adamax", dict(learning_rate=0.01, global_clipnorm=1.0)),
    ("rmsprop", dict(learning_rate=0.01, momentum=0.9, clipnorm=1.0)),
    ("adadelta", dict(learning_rate=1.0, clipvalue=1.0)),
]


def _nan_leaves(params):
  return [bool(np.isnan(x).any()) for x in jax.tree.leaves(params)]


@pytest.mark.parametrize("kind,kwargs", NO_SCALING,
                         ids=[k for k, _ in NO_SCALING])
@pytest.mark.fast_cases(1)
def test_non_finite_grads_without_scaling_match_keras(kind, kwargs):
  """Without loss scaling NaN/Inf/1e30 gradients do exactly what Keras does.

  25 jitted steps; the elements that are NaN in Keras's parameters are NaN
  in ours and every other one agrees. What it amounts to (BUILD.md): a NaN
  or Inf gradient element poisons its own parameter element for good
  (through the slots); `clipnorm` spreads a NaN to its whole leaf (an Inf
  element becomes NaN, the rest of its leaf gets a zero gradient) and
  `global_clipnorm` spreads either to every parameter (a non-finite norm
  makes every gradient NaN, Keras's choice). A huge finite gradient whose square
  overflows float32 poisons Adam and RMSprop the same way (inf - inf in the
  second moment on the next step).
  """
  params = make_params()
  grads = hostile(params)
  want, _ = keras_trajectory(kind, params, grads, **kwargs)
  got, _ = ours_trajectory(FACTORIES[kind](**kwargs), params, grads)
  assert_trajectories_match(want, got)
  for w, g in zip(jax.tree.leaves(want[-1]), jax.tree.leaves(got[-1])):
    np.testing.assert_array_equal(np.isnan(w), np.isnan(g))
  assert any(_nan_leaves(got[-1]))  # the bad steps did reach the parameters
  if "global_clipnorm" in kwargs:
    assert all(bool(np.isnan(x).all()) for x in jax.tree.leaves(got[-1]))


@pytest.mark.parametrize("kind,kwargs", NO_SCALING,
                         ids=[k for k, _ in NO_SCALING])
@pytest.mark.fast_cases(1)
def test_non_finite_grads_with_scaling_are_skipped(kind, kwargs):
  """Under loss scaling NaN and Inf steps leave params and state finite.

  (Keras parity of the same kind of run is in test_loss_scale.py.)
  """
  params = make_params()
  opt = ox.loss_scale_optimizer(FACTORIES[kind](**kwargs), 2.0**10, 4)
  got, scales, state = ours_ls_trajectory(
      opt, params, hostile(params, huge=False))
  assert scales[3] == scales[2] / 2 and scales[8] == scales[7] / 2
  for x in jax.tree.leaves((got, state)):
    assert np.isfinite(np.asarray(x, np.float64)).all()


def test_huge_finite_gradient_with_scaling_matches_keras():
  """A finite 1e30 gradient is not skipped, in Keras as here.

  Under loss scaling it is applied; Adam's second moment overflows and its
  element turns NaN on the next step, exactly as Keras's does. Loss
  scaling guards against Inf and NaN, not against overflow inside the
  optimizer; clip the gradients for that.
  """
  params = make_params()
  grads = hostile(params)
  want, want_scale = keras_ls_trajectory("adam", params, grads, 2.0**10, 4,
                                         learning_rate=0.01)
  opt = ox.loss_scale_optimizer(ox.adam(0.01), 2.0**10, 4)
  got, got_scale, _ = ours_ls_trajectory(opt, params, grads)
  assert got_scale == want_scale
  assert_trajectories_match(want, got)
  assert _nan_leaves(got[12]) == [False] * 5
  assert _nan_leaves(got[-1]) == [False, False, True, False, False]
  for w, g in zip(jax.tree.leaves(want[-1]), jax.tree.leaves(got[-1])):
    np.testing.assert_array_equal(np.isnan(w), np.isnan(g))
  clipped = ox.loss_scale_optimizer(ox.adam(0.01, clipvalue=1.0), 2.0**10, 4)
  got, _, _ = ours_ls_trajectory(clipped, params, grads)
  assert not any(_nan_leaves(got[-1]))


def test_huge_gradient_overflow_in_scaled_loss_is_skipped():
  """A finite gradient that overflows once scaled is an Inf step: skipped.

  1e35 * 2**15 exceeds float32's range, so the scaled gradient is Inf; the
  step is skipped and the scale halves until the product fits.
  """
  opt = ox.loss_scale_optimizer(ox.adam(0.1), initial_scale=2.0**15)
  params = jnp.ones(2)
  state = opt.init(params)
  step = jax.jit(opt.update)
  halvings = 0
  while True:
    scaled = jnp.float32(1e35) * state.scale
    updates, state = step(jnp.stack([scaled, 1.0]), state, params)
    if bool(jnp.isfinite(scaled)):
      break
    halvings += 1
    assert not np.asarray(updates).any()
  assert halvings == math.ceil(math.log2(1e35 * 2.0**15 / 3.4028235e38))
  assert np.isfinite(np.asarray(optax.apply_updates(params, updates))).all()


@pytest.mark.parametrize("make", [
    *[lambda n=n: getattr(ox, n)() for n in KINDS],
    lambda: ox.scale_by_adam(), lambda: ox.scale_by_adamax(),
    lambda: ox.scale_by_rmsprop(momentum=0.9), lambda: ox.scale_by_adadelta(),
    lambda: ox.ema(0.9), lambda: ox.accumulate_gradients(optax.sgd(0.1), 2),
    lambda: ox.loss_scale_optimizer(ox.adam()),
    lambda: optax.chain(ox.clip_by_norm(1.0), ox.adam())],
    ids=[*KINDS, "scale_by_adam", "scale_by_adamax", "scale_by_rmsprop",
         "scale_by_adadelta", "ema", "accumulate", "loss_scale", "chain"])
def test_complex_parameters_are_refused_by_path_at_init(make):
  """Issue 9 item 7: a complex leaf used to get no slot and a zero update
  (frozen silently). Keras's rules are defined for real numbers, so `init`
  refuses it with a ValueError naming its path."""
  params = {"net": {"w": jnp.ones(2), "z": jnp.ones(2, jnp.complex64)}}
  with pytest.raises(ValueError, match=r"params\['net'\]\['z'\].*complex64"):
    make().init(params)
  with pytest.raises(ValueError, match=r"params\['net'\]\['z'\]"):
    jax.jit(make().init)(params)
