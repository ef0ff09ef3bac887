"""Continual-learning strategies: one module per strategy, built on the hook contract of
`cl.strategy` and loaded by name through `cl.catalog`.

Nothing here knows about W&B, files or the CLI.
"""
