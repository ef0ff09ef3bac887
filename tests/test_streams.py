"""Data sources and streams: class splits, permutations, rotations, eval subsets, torchvision."""

import numpy as np
import pytest
import torch

from cl.data import load_source, mnist5k_arrays, stratified_split, write_mnist_idx
from cl.errors import UserError
from cl.schema import BenchmarkConfig
from cl.streams import build_stream


@pytest.fixture(scope="module")
def mnist5k():
    return load_source("mnist5k")


def test_mnist5k_is_the_real_5000_digits(mnist5k):
    assert len(mnist5k.y_train) + len(mnist5k.y_test) == 5000
    assert mnist5k.x_train.shape[1:] == (1, 28, 28)
    assert 0.0 <= mnist5k.x_train.min() and mnist5k.x_train.max() <= 1.0
    assert torch.bincount(mnist5k.y_test).tolist() == [100] * 10  # stratified 20%


def test_stratified_split_is_disjoint_and_seeded():
    y = np.repeat(np.arange(4), 10)
    tr, te = stratified_split(y, 0.3, seed=1)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == 40
    assert np.array_equal(te, stratified_split(y, 0.3, seed=1)[1])
    assert not np.array_equal(te, stratified_split(y, 0.3, seed=2)[1])


def test_split_stream_has_disjoint_classes_in_order(mnist5k):
    s = build_stream(BenchmarkConfig(n_tasks=5), mnist5k, seed=0, eval_subset=1000)
    assert [e.classes for e in s.experiences] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    for e in s.experiences:
        assert set(e.y.unique().tolist()) == set(e.classes)
        assert set(e.eval_y.unique().tolist()) == set(e.classes)
        assert len(e.eval_y) == 200  # all of the task's test digits (< subset)
    assert not s.task_incremental


def test_class_order_shuffle_and_explicit(mnist5k):
    shuffled = build_stream(BenchmarkConfig(shuffle_classes=True), mnist5k, 3, 1000)
    again = build_stream(BenchmarkConfig(shuffle_classes=True), mnist5k, 3, 1000)
    assert [e.classes for e in shuffled.experiences] == [e.classes for e in again.experiences]
    explicit = build_stream(
        BenchmarkConfig(class_order=[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]), mnist5k, 0, 1000
    )
    assert explicit.experiences[0].classes == [8, 9]
    with pytest.raises(UserError, match="class_order"):
        build_stream(BenchmarkConfig(class_order=[0, 1]), mnist5k, 0, 1000)


def test_task_incremental_mask(mnist5k):
    s = build_stream(BenchmarkConfig(n_tasks=5, incremental="task"), mnist5k, 0, 1000)
    mask = s.class_mask()
    assert s.task_incremental and mask.shape == (5, 10)
    assert mask[2].nonzero().squeeze(1).tolist() == [4, 5]


def test_eval_subset_is_fixed_by_seed(mnist5k):
    cfg = BenchmarkConfig(n_tasks=2)
    a = build_stream(cfg, mnist5k, seed=0, eval_subset=50)
    b = build_stream(cfg, mnist5k, seed=0, eval_subset=50)
    c = build_stream(cfg, mnist5k, seed=1, eval_subset=50)
    assert len(a.experiences[0].eval_y) == 50
    assert torch.equal(a.experiences[0].eval_x, b.experiences[0].eval_x)
    assert not torch.equal(a.experiences[0].eval_x, c.experiences[0].eval_x)


def test_permuted_stream_permutes_pixels_per_task(mnist5k):
    s = build_stream(BenchmarkConfig(scenario="permuted", n_tasks=3), mnist5k, 0, 1000)
    x0, x1 = s.experiences[0].x.flatten(1), s.experiences[1].x.flatten(1)
    assert torch.equal(s.experiences[0].y, mnist5k.y_train)
    assert not torch.equal(x0, x1)
    # same pixel values, reordered: sorted rows are equal
    assert torch.equal(x0.sort(1).values, x1.sort(1).values)
    assert torch.equal(x0.sort(1).values, mnist5k.x_train.flatten(1).sort(1).values)


def test_rotated_stream_angles(mnist5k):
    cfg = BenchmarkConfig(scenario="rotated", n_tasks=3, angles=[0.0, 90.0, 180.0])
    s = build_stream(cfg, mnist5k, 0, 1000)
    assert torch.allclose(s.experiences[0].x, mnist5k.x_train)
    assert torch.allclose(s.experiences[2].x, mnist5k.x_train.flip(-1).flip(-2), atol=1e-6)


def test_random_label_stream_keeps_the_images_and_draws_new_labels(mnist5k):
    cfg = BenchmarkConfig(scenario="random_labels", n_tasks=3, samples_per_task=300)
    s = build_stream(cfg, mnist5k, 0, 1000)
    first = s.experiences[0]
    assert len(first.x) == len(first.y) == 300
    rows = (first.x.flatten(1)[:, None] == mnist5k.x_train.flatten(1)[None]).all(-1)
    drawn = mnist5k.y_train[rows.float().argmax(1)]
    assert rows.any(1).all() and torch.unique(drawn).numel() == 10  # from every class
    for e in s.experiences[1:]:
        assert torch.equal(e.x, first.x)
        assert (e.y != first.y).float().mean() > 0.8  # independent labels: about 0.9 differ
    assert torch.equal(first.eval_x, first.x) and torch.equal(first.eval_y, first.y)
    counts = torch.bincount(torch.cat([e.y for e in s.experiences]), minlength=10)
    assert counts.min() > 50  # every class drawn (900 labels, 90 expected each)
    again = build_stream(cfg, mnist5k, 0, 1000)
    assert torch.equal(again.experiences[2].y, s.experiences[2].y)  # seeded
    assert not torch.equal(build_stream(cfg, mnist5k, 1, 1000).experiences[0].y, first.y)


def test_samples_per_task_draws_a_seeded_subset_of_every_task(mnist5k):
    # mnist5k's training set is sorted by class: the first 100 would all be zeros
    cfg = BenchmarkConfig(scenario="permuted", n_tasks=2, samples_per_task=100)
    s = build_stream(cfg, mnist5k, 0, 1000)
    assert [len(e.x) for e in s.experiences] == [100, 100]
    assert torch.unique(s.experiences[0].y).numel() == 10
    assert len(s.experiences[0].eval_x) == 1000  # the test side is not cut
    again = build_stream(cfg, mnist5k, 0, 1000)
    assert torch.equal(again.experiences[1].y, s.experiences[1].y)
    full = build_stream(BenchmarkConfig(scenario="permuted", n_tasks=2), mnist5k, 0, 1000)
    assert torch.equal(full.experiences[1].eval_x, s.experiences[1].eval_x)  # eval draws kept


def test_digits_and_mnist1d_sources():
    d = load_source("digits")
    assert d.x_train.shape[1:] == (1, 8, 8) and d.n_classes == 10
    assert len(d.y_train) + len(d.y_test) == 1797
    m = load_source("mnist1d")
    assert m.x_train.shape == (4000, 40) and m.x_test.shape == (1000, 40)


def test_torchvision_mnist_loads_the_embedded_digits_offline(tmp_path):
    x, y = mnist5k_arrays()
    write_mnist_idx(tmp_path, x[:4000], y[:4000], x[4000:], y[4000:])
    d = load_source("mnist", root=str(tmp_path), download=False)
    assert d.x_train.shape == (4000, 1, 28, 28) and d.n_classes == 10
    assert torch.equal(d.y_test, torch.as_tensor(y[4000:]))
    assert torch.allclose(d.x_train[7, 0], torch.as_tensor(x[7], dtype=torch.float32) / 255)


def test_absent_torchvision_dataset_offline_is_a_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def no_network(self):
        raise RuntimeError(
            "Error downloading: <urlopen error [Errno -2] Name or service not known>"
        )

    monkeypatch.setattr(tvd.CIFAR10, "download", no_network)
    with pytest.raises(UserError, match=r"cifar-10-batches-py") as err:
        load_source("cifar10", root=str(tmp_path), download=True)
    assert str(tmp_path) in str(err.value)
