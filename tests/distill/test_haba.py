"""HaBa (Liu et al., NeurIPS 2022): hallucinators, storage, the contrastive constraint, and the distiller contract."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from proxynas.distill.base import seeded_convnet
from proxynas.distill.factorized import storage_budget
from proxynas.distill.haba import HaBa, HallucinatedBases, Hallucinator, supervised_contrastive
from proxynas.errors import ConfigError
from proxynas.testing.distillers import PreparedDistillerContract, tiny_images

CPU = torch.device("cpu")
# one tiny expert of 2 epochs; 3 unrolled student steps per iteration; two hallucinators
EXPERTS = {"num_experts": 1, "expert_train_epochs": 2, "expert_batch": 30, "expert_lr": 0.05, "width": 8, "depth": 2}
# lr_img 10 / lr_hallucinator 1 / lr_teacher 0.01 (not the CIFAR-10 ZCA values) so eq. 1 visibly falls in 12 iterations
FAST = {**EXPERTS, "iterations": 12, "syn_steps": 3, "expert_epochs": 1, "max_start_epoch": 1, "hallucinators": 2,
        "lr_img": 10.0, "lr_hallucinator": 1.0, "lr_teacher": 0.01, "log_every": 1}


class TestHaBaContract(PreparedDistillerContract):
    distiller = HaBa(**FAST)
    learns_step_size = True  # alpha, as MTT


# Reference: the released utils.StyleTranslator(kernel_size=3) has 5568 parameters on 3x32x32 images, 92 on 1x8x8.
@pytest.mark.parametrize("shape,released", [((3, 32, 32), 5568), ((1, 8, 8), 92)])
def test_a_hallucinator_stores_as_many_numbers_as_the_released_one(shape, released):
    assert sum(p.numel() for p in Hallucinator(shape, 3).parameters()) == released


def test_a_hallucinator_starts_as_its_two_convolutions_with_an_identity_affine_map():
    h = Hallucinator((2, 8, 8), 3)
    x = torch.randn(4, 2, 8, 8)
    torch.testing.assert_close(h(x), h.dec(h.enc(x)))
    with torch.no_grad():
        h.shift.add_(1.0)
    assert not torch.allclose(h(x), h.dec(h.enc(x)))


def test_expansion_is_class_then_basis_then_hallucinator():
    f = HallucinatedBases(3, 2, (1, 8, 8), hallucinators=4, kernel=3)
    with torch.no_grad():
        f.bases.normal_()
    images = f.expand()
    assert images.shape == (3 * 2 * 4, 1, 8, 8) and f.per_class == 8
    for k in range(3):
        for b in range(2):
            for j in range(4):
                row = k * 2 + b
                torch.testing.assert_close(images[k * 8 + b * 4 + j], f.hallucinate(torch.tensor([row]), j)[0])
    assert torch.equal(f.basis_labels(), torch.tensor([0, 0, 1, 1, 2, 2]))


def test_summary_expands_every_basis_by_every_hallucinator_and_stores_both():
    data = tiny_images()
    haba = HaBa(**{**FAST, "iterations": 1})
    summary = haba.distill(data, 2, seed=0, device=CPU)
    assert len(summary.data) == data.num_classes * 2 * 2 == data.num_classes * haba.images_per_class(2)
    stored = haba.factorization(data.shape, data.num_classes, 2).stored_tensors()
    assert summary.stored_numbers == sum(t.numel() for t in stored.values())
    assert summary.stored_numbers == data.num_classes * 2 * 64 + 2 * 92  # bases + two 1x8x8 hallucinators


# HaBa's released --ipc counts bases per class; the 5 hallucinators (5 x 5568 = 27840 numbers) come on top.
@pytest.mark.parametrize("ipc,over", [(1, 0.906), (10, 0.0906), (50, 0.0181)])
def test_cifar10_presets_exceed_the_budget_by_the_hallucinators_only(ipc, over):
    haba = HaBa.paper("cifar10", ipc)
    stored = haba.factorization((3, 32, 32), 10, ipc).stored_numbers()
    budget = storage_budget((3, 32, 32), 10, ipc)
    assert stored - budget == 5 * 5568
    assert stored / budget - 1 == pytest.approx(over, abs=5e-4)
    assert haba.images_per_class(ipc) == 5 * ipc


def test_presets_are_the_released_commands():
    assert HaBa.paper("cifar10", 1).syn_steps == 50 and HaBa.paper("cifar10", 1).max_start_epoch == 2
    assert HaBa.paper("cifar10", 10).lr_teacher == 0.001 and HaBa.paper("cifar10", 50).lr_teacher == 0.01
    assert HaBa().hallucinators == 5 and HaBa().lr_img == HaBa().lr_hallucinator == 100


def reference_supcon(features, labels, temperature):
    """L^sup_out written out anchor by anchor (Khosla et al. 2020, eq. 2)."""
    n, total = len(features), 0.0
    for i in range(n):
        others = [a for a in range(n) if a != i]
        denominator = sum(math.exp(float(features[i] @ features[a]) / temperature) for a in others)
        positives = [p for p in others if labels[p] == labels[i]]
        total += -sum(float(features[i] @ features[p]) / temperature - math.log(denominator) for p in positives) / len(
            positives
        )
    return total / n


def test_supervised_contrastive_is_the_papers_loss_and_rewards_class_clusters():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    features = F.normalize(torch.randn(8, 5, generator=g, dtype=torch.float64), dim=1)
    got = float(supervised_contrastive(features, labels, 0.5))
    assert got == pytest.approx(reference_supcon(features, labels, 0.5), rel=1e-10)
    centres = F.normalize(torch.randn(3, 5, generator=g, dtype=torch.float64), dim=1)
    clustered = F.normalize(centres[labels] + 0.05 * torch.randn(8, 5, generator=g, dtype=torch.float64), dim=1)
    assert float(supervised_contrastive(clustered, labels, 0.5)) < got


def test_the_contrastive_constraint_shapes_the_summary():
    data = tiny_images()
    base = HaBa(**{**FAST, "iterations": 3})
    prepared = base.prepare(data, seed=0, device=CPU)
    with_constraint = base.distill_prepared(data, 2, prepared, seed=0, device=CPU)
    without = dataclasses.replace(base, diversity_weight=0.0).distill_prepared(data, 2, prepared, seed=0, device=CPU)
    assert not torch.equal(with_constraint.data.x, without.data.x)
    assert with_constraint.history[0] > without.history[0]  # the same eq. 1 plus a positive (1 + cos) / 2 term


def test_adversary_loss_falls_as_the_adversary_learns_to_match_two_hallucinations():
    data = tiny_images()
    haba = HaBa(**{**FAST, "adversary_lr": 0.05})
    f = haba.factorization(data.shape, 3, 2, seed=1)
    with torch.no_grad():
        f.bases.copy_(data.x[:6])
        images = torch.cat([f.hallucinate(torch.arange(6), 0), f.hallucinate(torch.arange(6), 1)])
    adversary = seeded_convnet(data, 0, CPU, width=8, depth=2).requires_grad_(True)
    optimizer = torch.optim.SGD(adversary.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(20):
        loss = haba.adversary_loss(adversary, images, f.basis_labels())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_a_kernel_larger_than_the_images_is_a_config_error():
    with pytest.raises(ConfigError, match=r"haba: kernel=9 is larger than the 8x8 images"):
        HaBa(**{**FAST, "kernel": 9}).distill(tiny_images(), 2, seed=0, device=CPU)


def test_one_hallucinator_is_rejected_the_constraint_needs_two():
    with pytest.raises(ValueError, match="hallucinators must be"):
        HaBa(hallucinators=1)


def test_an_expert_window_beyond_the_experts_is_rejected_at_construction():
    with pytest.raises(ValueError, match="max_start_epoch - 1 \\+ expert_epochs"):
        HaBa(**{**FAST, "max_start_epoch": 5})
