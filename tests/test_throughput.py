"""benchmarks/throughput.py on a tiny ImageFolder: the variants chosen, the table and the agreement."""

import pytest

from proxynas.testing.datasets import write_image_folder
from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("throughput")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(write_image_folder(tmp_path_factory.mktemp("tp"), n_train=14, n_test=2))


def test_the_naive_loop_per_arch_path_and_fused_batch_run_on_the_same_archs(bench, folder, capsys):
    # NCHW throughout: (b) otherwise trains channels-last on a CPU, whose rounding differs from fused NCHW
    assert bench.main(["--archs", "3", "--naive-archs", "2", "--variants", "a,b,d", "--k", "3", "--eval-size", "6", "--steps", "12",
                       "--contiguous", "--data-root", folder, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    names = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| (")]
    assert names[:4] == ["(a) naive loop", "(a') naive, (b)'s scoring", "(b) per-arch", "(d) fused K=3"]
    assert not any(name.startswith("(c)") for name in names)  # not asked for
    agreement = next(line for line in out.splitlines() if line.startswith("| (b) per-arch vs (d) fused K=3 |"))
    assert float(agreement.split("|")[3]) < 1e-6  # same algorithm, same float32 arithmetic on one CPU


def test_the_fused_variant_alone_has_no_baseline_or_agreement(bench, folder, capsys):
    assert bench.main(["--archs", "2", "--variants", "d", "--k", "auto", "--eval-size", "6", "--steps", "12",
                       "--data-root", folder, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| (d) fused K=auto (chose 1) |"))
    assert row.split("|")[5].strip() == "n/a"  # no naive loop to compare with
    assert "agreement" not in out


def test_an_unknown_variant_is_refused(bench, folder):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--variants", "a,x", "--data-root", folder, "--device", "cpu"])
    assert exc.value.code == 2


def test_profile_prints_the_costliest_operators_of_each_in_process_variant(bench, folder, capsys):
    assert bench.main(["--archs", "1", "--variants", "b", "--eval-size", "6", "--steps", "3", "--profile",
                       "--data-root", folder, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "Self CPU time total" in out and "aten::convolution_backward" in out


def test_the_cuda_graph_variant_says_it_needs_cuda_on_a_cpu(bench, folder, capsys):
    assert bench.main(["--archs", "1", "--variants", "e", "--eval-size", "6", "--steps", "2",
                       "--data-root", folder, "--device", "cpu"]) == 0
    assert "(e) CUDA graphs: skipped, it needs a CUDA device" in capsys.readouterr().out


def test_cuda_graphs_train_the_per_arch_and_fused_variants_as_without_them_on_a_cpu(bench, folder, capsys):
    def arch_rows(*extra):
        assert bench.main(["--archs", "3", "--naive-archs", "2", "--variants", "a,b,d", "--k", "3", "--eval-size", "6",
                           "--steps", "12", "--data-root", folder, "--device", "cpu", *extra]) == 0
        out = capsys.readouterr().out
        assert f"(b)-(d), (f) CUDA graphs {bool(extra)}" in out.splitlines()[0]
        return [line for line in out.splitlines() if line.startswith("| `")]

    plain, graphed = arch_rows(), arch_rows("--cuda-graphs")
    assert len(plain) == 2 and graphed == plain  # on a CPU the graphed steps run eagerly, bit for bit alike


def test_side_by_side_training_scores_each_arch_as_the_per_arch_path_on_a_cpu(bench, folder, capsys):
    assert bench.main(["--archs", "3", "--variants", "b,f", "--k", "2,3", "--eval-size", "6", "--steps", "12",
                       "--data-root", folder, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    names = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| (")]
    assert names == ["(b) per-arch", "(f) side by side K=2", "(f) side by side K=2 workers=2", "(f) side by side K=3",
                     "(f) side by side K=3 workers=2"]
    assert "(b) per-arch vs (f) side by side K=3 on 3 archs: mean abs diff 0.00, max 0.00 points" in out


def test_images_trained_counts_full_epochs_and_the_batches_of_a_partial_one(bench):
    assert bench.images_trained(100, 100, 100) == 10_000  # the CPU size: every step is the whole summary
    assert bench.images_trained(500, 256, 400) == 200 * 500  # the GPU size: 200 epochs of 2 batches
    assert bench.images_trained(500, 256, 3) == 500 + 256


def test_arch_flops_charges_a_conv_edge_its_forward_and_its_two_backward_convolutions(bench):
    from proxynas.spaces import NB201Space

    channels, cells, size, trained, scored = 4, 2, 8, 10, 7
    space = NB201Space(channels=channels, cells_per_stage=cells)
    skip_only = "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    with_conv = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|skip_connect~1|none~2|"
    base, more = (bench.charged(bench.arch_flops_per_image(space, arch, (3, size, size), 10), trained, scored)
                  for arch in (skip_only, with_conv))
    # one 3x3 conv per cell; every stage has the same channels^2 x pixels (channels double as the side halves)
    forward = 2 * channels**2 * 9 * size**2
    assert more - base == 3 * cells * (3 * trained + scored) * forward


def test_the_table_reports_each_variants_arithmetic_rate_against_a_matmul_peak(bench, folder, capsys):
    assert bench.main(["--archs", "2", "--variants", "b", "--eval-size", "6", "--steps", "4",
                       "--data-root", folder, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    arithmetic = next(line for line in out.splitlines() if line.startswith("# arithmetic:"))
    assert "mean of 2 archs" in arithmetic and "matmul peak fp32" in arithmetic
    header = next(line for line in out.splitlines() if line.startswith("| variant (CPU)"))
    assert header.endswith("| GFLOP/s | % of matmul peak |")
    row = next(line for line in out.splitlines() if line.startswith("| (b) per-arch |"))
    gflops, share = (float(cell) for cell in row.split("|")[-3:-1])
    assert gflops > 0 and share >= 0


def test_flop_archs_counts_the_first_archs_and_says_so(bench, folder, capsys):
    assert bench.main(["--archs", "2", "--flop-archs", "1", "--variants", "b", "--eval-size", "6", "--steps", "2",
                       "--data-root", folder, "--device", "cpu"]) == 0
    arithmetic = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("# arithmetic:"))
    assert "mean of 1 archs, the first 1 of 2" in arithmetic


def test_the_naive_loop_is_charged_dc_benchs_scoring_and_separately_the_stricter_one(bench, folder, capsys):
    assert bench.main(["--archs", "2", "--variants", "a", "--eval-size", "6", "--steps", "3",
                       "--data-root", folder, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|") for line in out.splitlines() if line.startswith("| (a")}
    dc_bench, strict = rows["(a) naive loop"], rows["(a') naive, (b)'s scoring"]
    assert (dc_bench[5].strip(), strict[6].strip()) == ("1.00x", "1.00x")  # each its own column's baseline
    note = next(line for line in out.splitlines() if line.startswith("((a) and (a') are one run"))
    held_out = int(note.split("scoring on all ")[1].split()[0])
    whole_s = float(note.split("as DC-Bench does (")[1].split(" s")[0])
    capped_s = float(note.split("batches of 256 (")[1].split(" s")[0])
    assert held_out > 6  # the whole held-out split, not (b)'s six images
    # one run charged two ways: the seconds differ by the two scorings' difference (each printed to 0.1 s)
    assert abs((float(dc_bench[3]) - float(strict[3])) - (whole_s - capped_s)) <= 0.15


def test_naive_scores_scores_the_whole_split_apart_and_alike(bench):
    import torch

    from proxynas.data.types import DatasetSplits
    from proxynas.proxies import TrainProxy
    from proxynas.spaces import NB201Space
    from proxynas.testing.distillers import tiny_images

    train, val = tiny_images(per_class=(6, 6, 6)), tiny_images(per_class=(4, 4, 4), seed=1)
    data = DatasetSplits("tiny", train, val, val)
    space = NB201Space(channels=4, cells_per_stage=1)
    archs = space.sample(2, seed=0)
    proxy = TrainProxy(batch_size=256, lr=0.05, augment="dsa", steps=2)
    alone = bench.naive_scores(archs, space, data, data.train, data.val, proxy, torch.device("cpu"), 0)
    assert alone.whole_accs == [] and alone.whole_seconds == 0.0 and alone.scoring_seconds > 0
    both = bench.naive_scores(archs, space, data, data.train, data.val, proxy, torch.device("cpu"), 0, whole=data.val)
    assert both.accs == alone.accs  # scoring the whole split too changes nothing (a) trained
    assert both.whole_accs == both.accs and both.whole_seconds > 0  # same images, batches of 64 instead of 256
