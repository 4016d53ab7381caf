"""Checkpoints of the distillers' loops (proxynas.distill.checkpoint).

Every iterative distiller's contract (proxynas.testing.distillers) already
resumes its fast instance bit-identically; here the helpers themselves, a
journal on disk, and settings whose loops carry more state than the contract
instances' (search-space cells with batch norm, IDC's multi-formation and
pretraining, MTT's mini-batches, TESLA's first-order labels, an interruption
after the very first iteration).
"""

import random

import numpy
import pytest
import torch

from proxynas.distill import DC, DCC, DM, IDC, KCenter, Herding, RandomCoreset, TESLA, MTT, FRePo
from proxynas.distill.checkpoint import STATE, Checkpoint, Loop, capture_rng, detached_copy, restore_rng
from proxynas.engine.journal import Journal
from proxynas.spaces import NB201Space
from proxynas.testing.distillers import assert_resumes_bit_identically, tiny_images

CPU = torch.device("cpu")
SPACE = NB201Space(channels=4, cells_per_stage=1, skip_disconnected=True)  # cells with batch norm
EXPERTS = {"num_experts": 2, "expert_train_epochs": 2, "expert_batch": 30, "expert_lr": 0.05, "width": 16, "depth": 2}
TRAJECTORY = {**EXPERTS, "iterations": 6, "syn_steps": 3, "expert_epochs": 1, "max_start_epoch": 2}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("method", "at", "space"),
    [
        (DC(iterations=4, match_steps=2, net_epochs=1, batch_real=10, networks="space", momentum_net=0.5), 2, SPACE),
        (DCC(iterations=4, match_steps=2, net_epochs=1, batch_real=10, width=16, depth=2, outer_warmup=0), 1, None),
        (DM(iterations=6, networks="space", lr_img=0.1), 3, SPACE),
        (IDC(iterations=4, match_steps=2, net_steps=1, batch_net=20, batch_real=10, width=16, depth=2), 2, None),
        (MTT(**TRAJECTORY, batch_syn=4), 3, None),
        (TESLA(**TRAJECTORY, soft_labels=True, exact=True), 1, None),
        (FRePo(iterations=8, width=16, depth=2, pool_size=2, max_online_steps=2), 5, None),
    ],
    ids=["dc-space-bn", "dcc-at-1", "dm-space", "idc-factor2", "mtt-batches", "tesla-soft-labels-exact", "frepo-resets"],
)
def test_loops_with_more_state_resume_bit_identically(method, at, space):
    kwargs = {"space": space} if space is not None else {}
    assert_resumes_bit_identically(method, tiny_images(), 2, at=at, **kwargs)


def test_a_journal_on_disk_resumes_a_killed_distillation(tmp_path):
    dm = DM(iterations=6, width=16, depth=2)
    data = tiny_images()
    uninterrupted = dm.distill(data, 2, seed=0, device=CPU)

    class Killed(Exception):
        pass

    class KilledAt3(Checkpoint):
        def save(self, iteration, state):
            super().save(iteration, state)
            if iteration == 3:
                raise Killed

    with pytest.raises(Killed):
        dm.distill(data, 2, seed=0, device=CPU, checkpoint=KilledAt3(Journal(tmp_path), seconds=0))
    calls = []
    checkpoint = Checkpoint(Journal(tmp_path), seconds=0)  # a new process: a new object over the same folder
    assert checkpoint.restore()["iteration"] == 3
    resumed = dm.distill(
        data, 2, seed=0, device=CPU, checkpoint=checkpoint, progress=lambda done, total, **_: calls.append(done)
    )
    assert torch.equal(resumed.data.x, uninterrupted.data.x) and resumed.history == uninterrupted.history
    assert checkpoint.saves == 2 and checkpoint.restore()["iteration"] == 5  # 4 and 5; never the last (6)
    assert calls == [6]


def test_a_checkpoint_never_due_saves_nothing_and_changes_nothing():
    dm = DM(iterations=5, width=16, depth=2)
    checkpoint = Checkpoint(Journal(), seconds=1e9)
    with_checkpoint = dm.distill(tiny_images(), 2, seed=0, device=CPU, checkpoint=checkpoint)
    without = dm.distill(tiny_images(), 2, seed=0, device=CPU)
    assert checkpoint.saves == 0 and checkpoint.restore() is None
    assert torch.equal(with_checkpoint.data.x, without.data.x) and with_checkpoint.history == without.history


@pytest.mark.parametrize("method", [RandomCoreset(), Herding(width=16, depth=2), KCenter(width=16, depth=2)])
def test_coresets_accept_a_checkpoint_and_ignore_it(method):
    checkpoint = Checkpoint(Journal(), seconds=0)
    out = method.distill(tiny_images(), 2, seed=0, device=CPU, checkpoint=checkpoint)
    assert torch.equal(out.data.x, method.distill(tiny_images(), 2, seed=0, device=CPU).data.x)
    assert checkpoint.saves == 0


def test_save_and_restore_copy_the_tensors():
    checkpoint = Checkpoint(Journal(), seconds=0)
    live = torch.zeros(3, requires_grad=True)
    checkpoint.save(1, {"tensors": {"syn": live}, "nested": [torch.ones(2)]})
    with torch.no_grad():
        live.add_(1)  # the loop goes on updating its tensor in place
    restored = checkpoint.restore()
    assert torch.equal(restored["tensors"]["syn"], torch.zeros(3)) and not restored["tensors"]["syn"].requires_grad
    restored["tensors"]["syn"].add_(5)  # e.g. an optimizer loaded from it and stepped
    assert torch.equal(checkpoint.restore()["tensors"]["syn"], torch.zeros(3))
    assert checkpoint.restore()["iteration"] == 1


def test_detached_copy_keeps_structure():
    value = {"a": [torch.ones(1, requires_grad=True), (2, "x")], "b": None}
    copied = detached_copy(value)
    assert isinstance(copied["a"], list) and copied["a"][1] == (2, "x") and copied["b"] is None
    assert copied["a"][0] is not value["a"][0] and not copied["a"][0].requires_grad


def _loop(method="m", shape=(2,)):
    x = torch.zeros(shape, requires_grad=True)
    optimizer = torch.optim.SGD([x], lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    history: list[float] = []
    return Loop(method, tensors={"x": x}, optimizers=[optimizer], generators=[generator], history=history), x


def _run(loop, x, iterations, checkpoint):
    optimizer, generator = loop.optimizers[0], loop.generators[0]
    for it in loop.range(iterations, checkpoint):
        x.grad = torch.randn(x.shape, generator=generator)
        optimizer.step()
        loop.history.append(float(x.detach().sum()))
        yield it


def test_loop_range_resumes_after_the_saved_iteration_and_never_saves_the_last():
    reference, x_ref = _loop()
    assert list(_run(reference, x_ref, 5, None)) == [1, 2, 3, 4, 5]

    checkpoint = Checkpoint(Journal(), seconds=0)
    first, x1 = _loop()
    for it in _run(first, x1, 5, checkpoint):
        if it == 2:
            break  # killed at the end of iteration 2, before its state was saved
    assert checkpoint.restore()["iteration"] == 1

    second, x2 = _loop()
    assert list(_run(second, x2, 5, checkpoint)) == [2, 3, 4, 5]
    assert torch.equal(x2, x_ref) and second.history == reference.history
    assert checkpoint.restore()["iteration"] == 4


def test_loop_refuses_a_state_of_another_distillation():
    checkpoint = Checkpoint(Journal(), seconds=0)
    loop, x = _loop("dm")
    list(_run(loop, x, 3, checkpoint))
    other, y = _loop("dc")
    with pytest.raises(ValueError, match="of 'dm', not of 'dc'"):
        list(_run(other, y, 3, checkpoint))
    wider, z = _loop("dm", shape=(3,))
    with pytest.raises(ValueError, match=r"checkpoint's x is \(2,\), the loop's \(3,\)"):
        list(_run(wider, z, 3, checkpoint))


def test_rng_states_round_trip_generators_and_global_rngs():
    generators = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    state = capture_rng(generators, global_rng=True)

    def draw():
        return (
            [float(torch.rand(1, generator=g)) for g in generators],
            float(torch.rand(1)),
            random.random(),
            float(numpy.random.rand()),
        )

    saved = capture_rng(global_rng=True)  # the test's own global RNGs, put back at the end
    try:
        first = draw()
        restore_rng(state, generators)
        assert draw() == first
    finally:
        restore_rng(saved)
    with pytest.raises(ValueError, match="2 generator states for 1 generators"):
        restore_rng(state, generators[:1])
    assert set(capture_rng(generators)) == {"generators"}  # the global RNGs only when asked


def test_state_name_is_the_journal_entry():
    journal = Journal()
    Checkpoint(journal, seconds=0).save(7, {"k": 1})
    assert journal.load_state(STATE) == {"k": 1, "iteration": 7}
