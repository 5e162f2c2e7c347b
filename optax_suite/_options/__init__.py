"""Keras's base optimizer options, each an optax transformation of its own.

Clipping, decoupled weight decay, gradient accumulation, the parameter EMA,
row-sparse gradients, and applying updates. They import the checks and tree
helpers only; the loss scaling and multi-optimizer wrappers, which wrap
whole optimizers, are in ``optax_suite._wrappers``.
"""
