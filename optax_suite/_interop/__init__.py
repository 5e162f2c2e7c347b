"""Keras interop.

Configs both ways, injected hyperparameters, importing a Keras optimizer's
state, and migrating checkpoints between option sets.
"""
