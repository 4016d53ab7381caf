"""Distribution Matching (Zhao & Bilen 2023, eq. 4): divergence reporting and that it matches means."""

import pytest
import torch

from proxynas.data.types import ImageData
from proxynas.distill import DM
from proxynas.distill.base import seeded_convnet
from proxynas.distill.networks import draw_network
from proxynas.errors import DivergenceError
from proxynas.spaces import NB201Space
from proxynas.testing.distillers import DistillerContract, SpaceAwareDistillerContract

CPU = torch.device("cpu")
SMALL = {"width": 32, "depth": 2}  # depth 2 keeps a 2x2 map on 8x8 images


def tiny(per_class=20, seed=0) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    centres = 1.5 * torch.randn(3, 1, 8, 8, generator=g)
    y = torch.arange(3).repeat_interleave(per_class)
    x = centres[y] + 0.5 * torch.randn(len(y), 1, 8, 8, generator=g)
    return ImageData(x, y, ("a", "b", "c"), (0.5,), (0.25,))


def held_out_objective(dm: DM, data: ImageData, syn: torch.Tensor, ipc: int) -> float:
    """Eq. 4 averaged over embedders never used in training (seeds 10_000+), without augmentation."""
    real = [data.of_class(k) for k in range(data.num_classes)]
    total = 0.0
    for s in range(10_000, 10_010):
        net = seeded_convnet(data, s, CPU, width=dm.width, depth=dm.depth)
        total += float(dm.objective(net.embed, real, list(syn.split(ipc))))
    return total / 10


@pytest.mark.parametrize("init", ["noise", "real"])
def test_summary_matches_class_distributions_better_than_init(init):
    data, ipc = tiny(), 2
    dm = DM(iterations=40, init=init, **SMALL)
    start = dm.initial_images(data, ipc, torch.Generator().manual_seed(0), CPU)
    summary = dm.distill(data, ipc, seed=0, device=CPU)
    before = held_out_objective(dm, data, start, ipc)
    after = held_out_objective(dm, data, summary.data.x, ipc)
    assert after < 0.5 * before


def test_noise_init_moves_toward_class_means_in_pixels():
    # Instance norm makes the embedding shift/scale-invariant, so compare after per-image standardisation.
    data, ipc = tiny(), 2
    dm = DM(iterations=40, init="noise", **SMALL)
    start = dm.initial_images(data, ipc, torch.Generator().manual_seed(0), CPU)
    out = dm.distill(data, ipc, seed=0, device=CPU).data.x

    def corr_with_class_mean(x):
        """Mean Pearson correlation of each synthetic image with its class's mean image."""
        pairs = [torch.stack([x[i].flatten(), data.of_class(i // ipc).mean(0).flatten()]) for i in range(len(x))]
        return sum(float(torch.corrcoef(p)[0, 1]) for p in pairs) / len(pairs)

    assert corr_with_class_mean(out) > corr_with_class_mean(start) + 0.3


def test_nan_learning_rate_raises_divergence_naming_setting():
    with pytest.raises(DivergenceError, match=r"dm: objective became nan at iteration 2; lower distill\.methods\.dm\.lr_img"):
        DM(iterations=5, lr_img=float("nan"), **SMALL).distill(tiny(), 2, seed=0, device=CPU)


def test_real_init_uses_images_of_each_class():
    data = tiny()
    start = DM().initial_images(data, 3, torch.Generator().manual_seed(0), CPU)
    for i, image in enumerate(start):
        matches = (data.x == image).flatten(1).all(dim=1)
        assert (data.y[matches] == i // 3).all() and matches.any()


def test_objective_is_zero_when_sets_coincide_and_positive_otherwise():
    data = tiny()
    net = seeded_convnet(data, 0, CPU, **SMALL)
    real = [data.of_class(k) for k in range(3)]
    assert float(DM().objective(net.embed, real, real)) == pytest.approx(0.0, abs=1e-10)
    assert float(DM().objective(net.embed, real, [r.flip(-1) for r in real])) > 0


def test_history_and_progress():
    calls = []
    dm = DM(iterations=12, log_every=5, **SMALL)
    summary = dm.distill(tiny(), 2, seed=0, device=CPU, progress=lambda d, t, **info: calls.append((d, t, info)))
    assert len(summary.history) == 12
    assert [c[:2] for c in calls] == [(5, 12), (10, 12), (12, 12)]
    assert all(c[2]["loss"] == summary.history[c[0] - 1] for c in calls)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"iterations": 0}, "iterations must be an integer > 0"),
        ({"lr_img": 0.0}, "lr_img must be > 0"),
        ({"batch_real": -1}, "batch_real must be an integer > 0"),
        ({"momentum": 1.0}, "momentum"),
        ({"init": "zeros"}, "real, noise"),
        ({"dsa": "color_blur"}, "color, crop, cutout, flip, scale, rotate"),
    ],
)
def test_bad_settings_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DM(**kwargs)


# ------------------------------------------------- networks drawn from the search space
def spy_space():
    """A tiny NB201 space (batch norm, 4 channels, 1 cell per stage), the archs it builds and the seeds drawn."""
    built, seeds = [], []

    class Spy(NB201Space):
        def sample(self, n, seed):
            seeds.append(seed)
            return super().sample(n, seed)

        def build(self, arch, **sizes):
            built.append(arch)
            return super().build(arch, **sizes)

    return Spy(channels=4, cells_per_stage=1, skip_disconnected=True), built, seeds


# lr_img below the ConvNet default: a BN cell's embedding moves the images much faster
SPACE_DM = {"networks": "space", "init": "noise", "lr_img": 0.3, "dsa": "none"}


def test_search_space_aware_dm_draws_different_cells_and_still_lowers_its_loss():
    data, ipc = tiny(), 2
    space, built, seeds = spy_space()
    dm = DM(iterations=60, **SPACE_DM)
    summary = dm.distill(data, ipc, seed=0, device=CPU, space=space)
    assert len(built) == 60, "one fresh cell per iteration"
    assert len(set(built)) > 10
    assert len(summary.history) == 60 and all(torch.isfinite(torch.tensor(summary.history)))
    # Each iteration's loss is on another cell, whose scale varies more than the loss falls, so
    # the history is too noisy to compare; eq. 4 is compared on fixed cells instead: those the
    # run drew (same seeds -> same networks) and cells of the space it never saw.
    start = dm.initial_images(data, ipc, torch.Generator().manual_seed(0), CPU)
    real = [data.of_class(k) for k in range(data.num_classes)]

    def objective(images, cell_seeds):
        embedders = [draw_network(data, s, CPU, space=space).embed for s in cell_seeds]
        return sum(float(dm.objective(embed, real, list(images.split(ipc)))) for embed in embedders)

    drawn = list(seeds)
    assert objective(summary.data.x, drawn) < 0.75 * objective(start, drawn)
    held_out = range(10_000, 10_010)
    assert objective(summary.data.x, held_out) < 0.8 * objective(start, held_out)


class TestDMSpaceAwareContract(SpaceAwareDistillerContract):
    distiller = DM(iterations=4, **SPACE_DM)


class TestDMContract(DistillerContract):
    distiller = DM(iterations=12, **SMALL)


def test_batch_real_none_matches_every_image_of_each_class_embedded_in_pieces(monkeypatch):
    import proxynas.distill.dm as dm_module
    from proxynas.distill.base import class_indices
    from proxynas.testing.distillers import tiny_images

    data = tiny_images()
    indices = class_indices(data)
    syn = torch.randn(3 * 2, *data.shape, generator=torch.Generator().manual_seed(1))
    net = seeded_convnet(data, 0, torch.device("cpu"), width=8, depth=2)

    def loss(method, chunk):
        monkeypatch.setattr(dm_module, "REAL_EMBED_CHUNK", chunk)
        return method.iteration_loss(net.embed, data.x, indices, syn, 2, torch.Generator().manual_seed(0))

    everything = DM(batch_real=max(len(i) for i in indices), dsa="none")
    whole_class = DM(batch_real=None, dsa="none")
    # the same draws, all of each class's images; embedded 5 at a time (in pieces) -- same loss
    torch.testing.assert_close(loss(whole_class, 5), loss(everything, 5), rtol=1e-5, atol=1e-6)
    calls = []
    monkeypatch.setattr(net, "embed", lambda x, embed=net.embed: calls.append(len(x)) or embed(x))
    loss(whole_class, 5)
    assert max(calls[:-1]) <= 5 and sum(calls[:-1]) == len(data.x)  # the real side in pieces, the syn side whole
