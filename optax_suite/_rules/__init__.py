"""The update rules, one module each.

Each module holds a ``scale_by_<rule>`` transformation and its typed state.
It imports the checks, tree helpers and options below it, and nothing of
the optimizer assembly: the factories with Keras's signatures are in
``optax_suite._factories``. (Keras's AdamW is Adam's rule with the base
weight decay, so it has no module here.)
"""
