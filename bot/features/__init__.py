"""Discord features, one module each: slash commands, their buttons and their replies.

A feature is any object with ``register(tree, router)``. The composition root (``bot.cli``) adds
each with one line, ``bot.add_feature(...)``; a new feature is a new module plus that line.
"""
