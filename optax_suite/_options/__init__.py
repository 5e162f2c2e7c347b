"""Keras's base optimizer options, each an optax transformation of its own.

Clipping, decoupled weight decay, gradient accumulation, the parameter EMA
and loss scaling.
"""
