import pytest


@pytest.fixture
def fast(tmp_path):
    """Overrides for a small, quiet run in a temporary run.dir."""
    return [
        f"run.dir={tmp_path / 'runs'}",
        "run.progress=false",
        "wandb.mode=disabled",
        "model.hidden=[64]",
        "train.epochs=1",
    ]
