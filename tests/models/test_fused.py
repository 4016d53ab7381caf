"""Horizontal fusion of layers: n modules computed as one, each network's channels its own."""

import pytest
import torch
from torch import nn

from proxynas.models.fused import (
    FusedBatchNorm2d,
    FusedConv2d,
    FusedLinear,
    NotFusable,
    fuse_modules,
    per_network_cross_entropy,
    write_back,
)


def _block(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))


def _stacked(outputs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(outputs, dim=1)


def test_a_fused_block_computes_each_network_on_its_own_channels_with_its_own_gradients():
    blocks = [_block(s) for s in range(3)]
    fused = fuse_modules(blocks)
    assert isinstance(fused[1], FusedConv2d) and fused[1].groups == 3
    assert isinstance(fused[2], FusedBatchNorm2d) and fused[2].num_features == 12
    inputs = [torch.randn(5, 4, 6, 6) for _ in blocks]
    fused_out = fused(_stacked(inputs))
    single = _stacked([b(x) for b, x in zip(blocks, inputs)])
    torch.testing.assert_close(fused_out, single, rtol=1e-5, atol=1e-5)
    # network k's loss reaches only network k's weights
    (fused_out[:, 4:8] ** 2).sum().backward()
    grad = fused[1].weight.grad
    assert grad[:4].abs().sum() == 0 and grad[8:].abs().sum() == 0 and grad[4:8].abs().sum() > 0


def test_write_back_copies_weights_and_running_statistics_into_the_sources():
    blocks = [_block(s) for s in range(2)]
    fused = fuse_modules(blocks)
    fused.train()(torch.randn(8, 8, 5, 5))  # updates the running statistics
    with torch.no_grad():
        fused[1].weight.add_(1.0)
    write_back(fused)
    torch.testing.assert_close(blocks[1][1].weight, fused[1].weight[4:])
    torch.testing.assert_close(blocks[0][2].running_mean, fused[2].running_mean[:4])
    assert int(blocks[1][2].num_batches_tracked) == 1


def test_a_shared_input_stem_reads_one_image_for_every_network():
    torch.manual_seed(0)
    convs = [nn.Conv2d(3, 4, 3, padding=1, bias=False) for _ in range(3)]
    fused = FusedConv2d(convs, shared_input=True)
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(fused(x), _stacked([c(x) for c in convs]), rtol=1e-5, atol=1e-5)


def test_fused_linear_heads_give_one_column_of_logits_per_network():
    torch.manual_seed(0)
    heads = [nn.Linear(6, 3) for _ in range(4)]
    fused = FusedLinear(heads)
    features = [torch.randn(5, 6) for _ in heads]
    out = fused(torch.cat(features, dim=1))
    assert out.shape == (5, 4, 3)
    for k, (head, f) in enumerate(zip(heads, features)):
        torch.testing.assert_close(out[:, k], head(f), rtol=1e-5, atol=1e-5)


def test_per_network_cross_entropy_is_each_columns_mean_loss():
    logits = torch.randn(7, 3, 5)
    y = torch.randint(0, 5, (7,))
    soft = torch.rand(7, 5).softmax(1)
    for target in (y, soft):
        expected = torch.stack([nn.functional.cross_entropy(logits[:, k], target) for k in range(3)])
        torch.testing.assert_close(per_network_cross_entropy(logits, target), expected)


@pytest.mark.parametrize(
    "modules, problem",
    [
        ([nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2)], "classes differ"),
        ([nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 1)], "kernel_size differs"),
        ([nn.PReLU(), nn.PReLU()], "parameters that fusion does not know"),
    ],
)
def test_modules_that_cannot_be_fused_say_why(modules, problem):
    with pytest.raises(NotFusable, match=problem):
        fuse_modules(modules)
