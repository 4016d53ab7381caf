"""KFS (Lee, Lee & Hwang, arXiv 2022): codes and shared decoders, budgets, and DM's objective through them."""

import pytest
import torch

from proxynas.distill.base import seeded_convnet
from proxynas.distill.factorized import storage_budget
from proxynas.distill.kfs import KFS, CodesAndDecoders, decoder, kfs_codes_for_budget
from proxynas.errors import ConfigError, DivergenceError
from proxynas.numerics import draw_seed
from proxynas.testing.distillers import DistillerContract, tiny_images

CPU = torch.device("cpu")
# 2 codes of 1x4x4 per class and 2 decoders of 4 hidden channels: 3*2*16 + 2*(1*4*4 + 4 + 4*9 + 1) = 210 numbers,
# under the 384 of ipc 2 on 3 classes of 1x8x8; depth 2 keeps a 2x2 map on 8x8 images
SMALL = {"codes": 2, "decoders": 2, "hidden": 4, "latent_channels": 1, "latent_downsample": 2, "width": 8, "depth": 2,
         "batch_real": 10}
# lr 0.1 (not the default 0.01) so DM's objective visibly falls within a dozen iterations
FAST = {**SMALL, "iterations": 12, "lr": 0.1, "log_every": 1}


class TestKFSContract(DistillerContract):
    distiller = KFS(**FAST)


def test_expansion_is_class_then_code_then_decoder():
    f = CodesAndDecoders(3, 2, (1, 8, 8), decoders=3, latent_channels=2, latent_downsample=2, hidden=4)
    images = f.expand()
    assert images.shape == (3 * 2 * 3, 1, 8, 8) and f.per_class == 6
    for k in range(3):
        for c in range(2):
            for j in range(3):
                code = f.codes[k * 2 + c : k * 2 + c + 1]
                torch.testing.assert_close(images[k * 6 + c * 3 + j], f.decoders[j](code)[0])


def test_stored_numbers_are_the_codes_and_the_decoders():
    data = tiny_images()
    summary = KFS(**{**FAST, "iterations": 1}).distill(data, 2, seed=0, device=CPU)
    one_decoder = sum(p.numel() for p in decoder(data.shape, 1, 2, 4).parameters())
    assert one_decoder == 1 * 4 * 2 * 2 + 4 + 4 * 1 * 9 + 1  # transposed conv 2x2 stride 2, then conv 3x3
    assert summary.stored_numbers == 3 * 2 * (1 * 4 * 4) + 2 * one_decoder == 210
    stored = KFS(**FAST).factorization(data.shape, data.num_classes, 2).stored_tensors()
    assert summary.stored_numbers == sum(t.numel() for t in stored.values())
    assert set(stored) == {"codes", *(f"decoders.{j}.{layer}.{kind}" for j in (0, 1) for layer in (0, 2)
                                      for kind in ("weight", "bias"))}
    assert len(summary.data) == 3 * KFS(**FAST).images_per_class(2) == 3 * 2 * 2


@pytest.mark.parametrize("ipc", [1, 10, 50])
def test_cifar10_presets_fill_the_budget(ipc):
    kfs = KFS.paper("cifar10", ipc)
    budget = storage_budget((3, 32, 32), 10, ipc)
    stored = kfs.factorization((3, 32, 32), 10, ipc).stored_numbers()
    assert stored <= budget
    assert KFS(codes=kfs.codes + 1).factorization((3, 32, 32), 10, ipc).stored_numbers() > budget
    # eight decoders of 643 numbers (transposed conv 3->16 2x2, conv 16->3 3x3) beside codes of 3x16x16
    assert stored == 10 * kfs.codes * 768 + 8 * 643
    assert kfs.images_per_class(ipc) == 8 * kfs.codes > ipc


def test_codes_for_budget_leaves_room_for_the_decoders():
    # 3 classes of 1x8x8 at ipc 2: 384 numbers; two decoders of 57 take 114, codes of 16 -> (384 - 114) / 48 = 5.6
    assert kfs_codes_for_budget((1, 8, 8), 3, 2, decoders=2, latent_channels=1, latent_downsample=2, hidden=4) == 5


def test_factors_over_the_budget_are_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"kfs: the summary would store \d+ numbers but ipc=1 allows 192") as err:
        KFS(**{**FAST, "codes": 6}).distill(tiny_images(), 1, seed=0, device=CPU)
    assert "distill.methods.kfs.codes" in str(err.value) and "\n" not in str(err.value)


def test_a_latent_downsample_that_does_not_divide_the_image_is_a_config_error():
    with pytest.raises(ConfigError, match=r"latent_downsample=3 must divide the 8x8 image size"):
        KFS(**{**FAST, "latent_downsample": 3}).distill(tiny_images(), 2, seed=0, device=CPU)


def held_out_objective(kfs, data, images, per_class):
    """DM's eq. 4 over embedders no run drew (seeds 10_000+), without augmentation."""
    real = [data.of_class(k) for k in range(data.num_classes)]
    total = 0.0
    for seed in range(10_000, 10_008):
        net = seeded_convnet(data, seed, CPU, width=kfs.width, depth=kfs.depth)
        total += float(kfs.matching.objective(net.embed, real, list(images.split(per_class))))
    return total / 8


def test_distillation_lowers_dms_objective_on_embedders_it_never_saw():
    data = tiny_images()
    kfs = KFS(**{**FAST, "iterations": 40})
    start = kfs.factorization(data.shape, 3, 2, seed=draw_seed(torch.Generator().manual_seed(0)))  # its init
    with torch.no_grad():
        before = held_out_objective(kfs, data, start.expand(), start.per_class)
    summary = kfs.distill(data, 2, seed=0, device=CPU)
    after = held_out_objective(kfs, data, summary.data.x, start.per_class)
    assert after < 0.5 * before


def test_a_diverging_learning_rate_is_a_divergence_naming_it():
    # Adam moves every factor by about lr in its first step: 1e30 overflows the decoded images' embeddings
    with pytest.raises(DivergenceError, match=r"kfs: objective became (nan|inf) at iteration 2; lower distill\.methods\.kfs\.lr"):
        KFS(**{**FAST, "iterations": 3, "lr": 1e30}).distill(tiny_images(), 2, seed=0, device=CPU)


def test_a_nan_learning_rate_is_rejected_with_the_settings():
    with pytest.raises(ValueError, match="lr must be"):
        KFS(lr=float("nan"))


def test_matching_defaults_to_the_whole_class_as_kfs_full_batch():
    assert KFS().batch_real is None and KFS().matching.batch_real is None
    assert KFS(batch_real=64).matching.batch_real == 64
