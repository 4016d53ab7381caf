"""The Summary record: what a distiller hands to the proxies."""

import math

import pytest
import torch

from proxynas.data.types import ImageData
from proxynas.distill.base import Summary

DATA = ImageData(torch.zeros(2, 1, 4, 4), torch.tensor([0, 1]), ("a", "b"), (0.0,), (1.0,))


def test_a_learned_lr_is_optional_and_kept():
    assert Summary(DATA, "x").learned_lr is None
    assert Summary(DATA, "x", learned_lr=0.02).learned_lr == 0.02


@pytest.mark.parametrize("bad", [0.0, -0.1, math.nan, math.inf])
def test_a_learned_lr_must_be_a_finite_positive_number(bad):
    with pytest.raises(ValueError, match="learned_lr must be a finite number > 0"):
        Summary(DATA, "x", learned_lr=bad)


def test_a_learned_schedule_names_its_step_batches_and_counts_in_the_storage():
    from proxynas.distill.base import StepSchedule

    schedule = StepSchedule((0.1, 0.2, 0.3), images_per_step=2)
    batches = schedule.batch_indices(num_classes=3, per_class=4)
    assert [b.tolist() for b in batches] == [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 11]]
    data = ImageData(torch.zeros(4, 1, 2, 2), torch.tensor([0, 0, 1, 1]), ("a", "b"), (0.0,), (1.0,))
    summary = Summary(data, "dd", learned_schedule=schedule)
    assert summary.storage == 16 + 3  # the images and the step sizes
    with pytest.raises(ValueError, match="images_per_step 2 must divide"):
        Summary(DATA, "dd", learned_schedule=schedule)  # one image per class cannot make batches of 2
    for bad in [(), (0.1, math.nan)]:
        with pytest.raises(ValueError, match="step_sizes must be a non-empty tuple of finite numbers"):
            StepSchedule(bad, 1)


def test_an_evaluation_protocol_decays_at_its_milestones_and_rejects_bad_ones():
    from proxynas.distill.base import EvaluationProtocol

    assert EvaluationProtocol(epochs=300).decay_epochs() == [150]  # DC's: x0.1 half way
    assert EvaluationProtocol(epochs=1000, lr_decay_at=(2 / 3, 5 / 6)).decay_epochs() == [666, 833]
    for bad in [(0.0,), (1.0,), (0.8, 0.5)]:
        with pytest.raises(ValueError, match="lr_decay_at must be increasing fractions"):
            EvaluationProtocol(lr_decay_at=bad)


def test_a_preset_evaluated_otherwise_than_the_method_gets_its_own_protocol():
    from proxynas.distill import IDC, MTT

    assert MTT().evaluation_protocol("cifar10-ipc10").zca is True
    assert MTT().evaluation_protocol("cifar10-ipc50").zca is False  # MTT's IPC 50 row did not whiten
    assert MTT().evaluation_protocol() == MTT.paper_protocol
    assert IDC.paper_protocol.decay_epochs() == [666, 833]  # IDC's released x0.2 at 2/3 and 5/6
