"""The overrides of a tiny, quiet run: digits in 3 tasks, a 32-unit MLP (tests extend them)."""

TINY = [
    "run.progress=false",
    "wandb.mode=disabled",
    "benchmark.source=digits",
    "benchmark.n_tasks=3",
    "model.hidden=[32]",
]
