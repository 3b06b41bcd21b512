"""Image generation: requests, the option parser, diffusers pipelines, grids and the worker loop.

Only the torch-free modules (``request``, ``options``, ``presets``, ``weights``, ``errors``,
``followups``, ``grid``, ``results``) may be imported by the bot; importing this package itself
loads nothing heavy.
"""
