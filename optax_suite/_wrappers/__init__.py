"""Wrappers of whole optimizers: loss scaling, one optimizer per group of
parameters, injected hyperparameters.

Each returns a :class:`~optax_suite.KerasOptimizer` with a fused step of
its own, built over the fused steps of the optimizers it wraps.
"""
