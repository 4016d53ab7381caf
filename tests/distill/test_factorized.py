"""The shared interface of factorised summaries (proxynas.distill.factorized): budgets, expansion, storage."""

import pytest
import torch
from torch import nn

from proxynas.distill.factorized import (
    Factorization,
    check_budget,
    factorized_summary,
    seeded_build,
    storage_budget,
    units_for_budget,
)
from proxynas.errors import ConfigError, DivergenceError
from proxynas.testing.distillers import tiny_images


class Tiled(Factorization):
    """A test factorisation: one stored image per class, each expanded as itself and its negative and a scale."""

    def __init__(self, num_classes: int, image_shape) -> None:
        super().__init__(num_classes, 2, image_shape)
        self.images = nn.Parameter(torch.randn(num_classes, *image_shape))
        self.gain = nn.Parameter(torch.tensor(2.0))

    def expand(self) -> torch.Tensor:
        return torch.stack([self.images, -self.gain * self.images], dim=1).flatten(0, 1)


def test_storage_budget_is_ipc_images_per_class():
    assert storage_budget((3, 32, 32), 10, 1) == 30720
    assert storage_budget((1, 8, 8), 3, 2) == 2 * 3 * 64


# Reference values: the released LinBa utils/Img_per_Cls_budget.py (cal_ncoef, floored as merge_args does),
# run on CIFAR-10 (16 bases at half resolution) and on 3 classes of 1x8x8 images (4 bases at 4x4).
@pytest.mark.parametrize(
    "shape,classes,ipc,shared,per_unit,expected",
    [
        ((3, 32, 32), 10, 1, 16 * 768, 16, 115),
        ((3, 32, 32), 10, 10, 16 * 768, 16, 1843),
        ((3, 32, 32), 10, 50, 16 * 768, 16, 9523),
        ((1, 8, 8), 3, 1, 4 * 16, 4, 10),
        ((1, 8, 8), 3, 2, 4 * 16, 4, 26),
        ((1, 8, 8), 3, 3, 4 * 16, 4, 42),
    ],
)
def test_units_for_budget_is_the_released_fixed_budget_rule(shape, classes, ipc, shared, per_unit, expected):
    assert units_for_budget(shape, classes, ipc, shared=shared, per_unit=per_unit) == expected


def test_units_for_budget_can_be_zero_or_negative_when_shared_factors_take_it_all():
    assert units_for_budget((1, 8, 8), 3, 1, shared=3 * 64, per_unit=4) == 0
    assert units_for_budget((1, 8, 8), 3, 1, shared=10_000, per_unit=4) < 0


def test_stored_numbers_is_the_size_of_the_parameters_and_buffers_do_not_count():
    f = Tiled(3, (1, 8, 8))
    f.register_buffer("scratch", torch.zeros(100))  # not stored: a buffer is no factor
    assert f.stored_numbers() == 3 * 64 + 1
    assert set(f.stored_tensors()) == {"images", "gain"}
    assert f.stored_tensors()["images"] is f.images  # live: a checkpoint restores into them


def test_labels_follow_the_class_major_expansion():
    f = Tiled(3, (1, 4, 4))
    assert torch.equal(f.labels(), torch.tensor([0, 0, 1, 1, 2, 2]))


def test_a_factorisation_needs_a_class_and_an_image_per_class():
    with pytest.raises(ValueError, match="at least one class"):
        Tiled(0, (1, 4, 4))


def test_seeded_build_depends_on_the_seed_only_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = seeded_build(lambda: Tiled(3, (1, 4, 4)), 7)
    b = seeded_build(lambda: Tiled(3, (1, 4, 4)), 7)
    c = seeded_build(lambda: Tiled(3, (1, 4, 4)), 8)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)


def test_check_budget_passes_at_the_budget_and_names_the_settings_above_it():
    data = tiny_images()
    f = Tiled(3, data.shape)  # 3 * 64 + 1 numbers: just over one image per class
    check_budget("m", f, 2, settings="distill.methods.m.size")
    with pytest.raises(ConfigError, match=r"m: the summary would store 193 numbers but ipc=1 allows 192") as err:
        check_budget("m", f, 1, settings="distill.methods.m.size")
    assert "distill.methods.m.size" in str(err.value) and "\n" not in str(err.value)


def test_factorized_summary_holds_the_expansion_and_reports_the_stored_numbers():
    data = tiny_images()
    f = Tiled(3, data.shape)
    summary = factorized_summary(data, f, "m", [3.0, 2.0], learned_lr=0.5, setting="s")
    assert torch.equal(summary.data.x, f.expand().detach())
    assert torch.equal(summary.data.y, f.labels())
    assert summary.data.classes == data.classes and (summary.data.mean, summary.data.std) == (data.mean, data.std)
    assert summary.stored_numbers == f.stored_numbers() == summary.storage
    assert summary.storage < summary.data.x.numel()  # it expands to more numbers than it stores
    assert summary.history == (3.0, 2.0) and summary.learned_lr == 0.5 and summary.method == "m"
    assert not summary.data.x.requires_grad


def test_a_non_finite_expansion_is_a_divergence_naming_the_setting():
    data = tiny_images()
    f = Tiled(3, data.shape)
    with torch.no_grad():
        f.gain.fill_(float("inf"))
    with pytest.raises(DivergenceError, match=r"m: objective became nan at iteration 2; lower distill\.x"):
        factorized_summary(data, f, "m", [1.0, 1.0], setting="distill.x")
