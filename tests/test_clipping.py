"""Keras's clipnorm, clipvalue and global_clipnorm as transformations."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax.numpy as jnp  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import optax_suite as ox  # noqa: E402
from keras.src.optimizers import base_optimizer  # noqa: E402


def _tree(seed):
  rng = np.random.default_rng(seed)
  return {"a": jnp.asarray(rng.normal(size=(3, 4)) * 5, jnp.float32),
          "b": jnp.zeros((2,), jnp.float32),  # an all-zero leaf
          "c": jnp.asarray(rng.normal(size=()), jnp.float32)}


@pytest.mark.parametrize("bound", [0.1, 1.0, 100.0])
def test_clip_by_norm_matches_keras_per_leaf(bound):
  """Each leaf is clipped by its own norm, zero leaves stay zero (Keras)."""
  g = _tree(0)
  out, _ = ox.clip_by_norm(bound).update(g, None)
  opt = keras.optimizers.SGD(clipnorm=bound)
  for key in g:
    expected = opt._clip_by_norm(g[key])  # pylint: disable=protected-access
    np.testing.assert_array_equal(out[key], expected)
    assert float(jnp.linalg.norm(out[key])) <= bound * (1 + 1e-6)


@pytest.mark.parametrize("bound", [0.1, 1.0, 100.0])
def test_clip_by_global_norm_matches_keras(bound):
  g = _tree(1)
  out, _ = ox.clip_by_global_norm(bound).update(g, None)
  expected = base_optimizer.clip_by_global_norm(list(g.values()), bound)
  for key, e in zip(g, expected):
    np.testing.assert_array_equal(out[key], e)
  assert float(ox.global_norm(out)) <= bound * (1 + 1e-6)


def test_global_norm_non_finite_makes_every_gradient_nan():
  """Keras's choice: an inf anywhere turns every gradient into NaN."""
  g = _tree(2)
  g["c"] = jnp.asarray(jnp.inf)
  out, _ = ox.clip_by_global_norm(1.0).update(g, None)
  assert all(bool(jnp.all(jnp.isnan(v))) for v in out.values())


@pytest.mark.parametrize("bound", [0.1, 0.5, 3.0])
def test_clip_by_value_matches_keras_elementwise(bound):
  """Each element is clipped to [-bound, bound] as Keras's clipvalue does.

  Checked against Keras's own `_clip_gradients` and against the definition
  written out in NumPy (float64 comparisons, then the float32 bound): the
  elements inside the bound come back bit for bit, the others become the
  bound with their sign.
  """
  g = _tree(3)
  g["a"] = g["a"].at[0, 0].set(-bound).at[0, 1].set(bound)  # on the bound
  out, _ = ox.clip_by_value(bound).update(g, None)
  keras_out = keras.optimizers.SGD(clipvalue=bound)._clip_gradients(  # noqa
      list(g.values()))
  b = np.float32(bound)
  for key, k in zip(g, keras_out):
    x = np.asarray(g[key])
    by_hand = np.where(x > b, b, np.where(x < -b, -b, x)).astype(np.float32)
    np.testing.assert_array_equal(out[key], k)
    np.testing.assert_array_equal(out[key], by_hand)
  assert int(np.sum(np.abs(np.asarray(g["a"])) > b)) > 0  # some were clipped


@pytest.mark.parametrize("make", [ox.clip_by_norm, ox.clip_by_value,
                                  ox.clip_by_global_norm])
def test_zero_bound_disables_clipping_as_in_keras(make):
  g = _tree(4)
  out, _ = make(0.0).update(g, None)
  for key in g:
    np.testing.assert_array_equal(out[key], g[key])


def test_integer_leaves_pass_through():
  g = {"w": jnp.array([30.0, 40.0]), "step": jnp.array(7, jnp.int32)}
  for tx in (ox.clip_by_norm(1.0), ox.clip_by_value(1.0),
             ox.clip_by_global_norm(1.0)):
    out, _ = tx.update(g, tx.init(g))
    assert out["step"].dtype == jnp.int32 and int(out["step"]) == 7
    assert float(jnp.max(jnp.abs(out["w"]))) <= 1.0 + 1e-6
