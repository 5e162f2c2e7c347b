"""Keras interop.

Configs both ways, importing a Keras optimizer's state, and migrating
checkpoints between option sets.
"""
