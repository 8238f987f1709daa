"""Tests of the local training loop, batching and seeding."""

import torch
from torch import nn

from fedsign.seeding import derive_seed, torch_generator
from fedsign.training import SGDSettings, batch_order, evaluate, train_local


def test_batch_order_covers_each_example_once_per_epoch():
    batches = batch_order(10, SGDSettings(epochs=2, batch_size=4), torch_generator(0, "test"))
    # 10 examples in batches of 4: sizes 4, 4, 2 per epoch.
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    first_epoch = torch.cat(batches[:3]).sort().values
    assert torch.equal(first_epoch, torch.arange(10))


def test_batch_order_drops_single_example_batch():
    batches = batch_order(9, SGDSettings(epochs=1, batch_size=4), torch_generator(0, "test"))
    assert [len(b) for b in batches] == [4, 4]


def test_batch_order_with_steps():
    batches = batch_order(6, SGDSettings(steps=5, batch_size=4), torch_generator(0, "test"))
    assert len(batches) == 5


def test_derived_seeds_differ_by_purpose_and_key():
    assert derive_seed(0, "sampling", 1) == derive_seed(0, "sampling", 1)
    assert derive_seed(0, "sampling", 1) != derive_seed(0, "sampling", 2)
    assert derive_seed(0, "sampling", 1) != derive_seed(0, "data-order", 1)


def make_problem():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 4, generator=generator)
    y = (x.sum(dim=(1, 2)) > 0).long()
    return x, y


def make_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 2))


def test_train_local_is_deterministic_and_learns():
    x, y = make_problem()
    settings = SGDSettings(epochs=20, batch_size=16, lr=0.1, momentum=0.0)
    first, second = make_model(), make_model()
    loss_before, _ = evaluate(first, x, y)
    train_local(first, x, y, settings=settings, generator=torch_generator(3, "d"))
    train_local(second, x, y, settings=settings, generator=torch_generator(3, "d"))
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    loss_after, accuracy = evaluate(first, x, y)
    assert loss_after < loss_before
    assert accuracy > 0.8


def test_regularizer_changes_the_update():
    x, y = make_problem()
    settings = SGDSettings(epochs=1, batch_size=16, lr=0.1, momentum=0.0)
    plain, regularised = make_model(), make_model()
    train_local(plain, x, y, settings=settings, generator=torch_generator(3, "d"))
    stats = train_local(regularised, x, y, settings=settings, generator=torch_generator(3, "d"),
                        regularizers=[lambda model: model[1].weight.square().sum()])
    assert not torch.equal(plain[1].weight, regularised[1].weight)
    assert stats.regularizer > 0
