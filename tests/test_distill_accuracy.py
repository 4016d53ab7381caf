"""benchmarks/distill_accuracy.py: each method evaluated with its paper's protocol, rows marked comparable or not."""

from dataclasses import replace

import pytest
import torch

from proxynas.distill import DISTILLERS, Summary
from proxynas.distill.base import EvaluationProtocol
from proxynas.testing.distillers import tiny_images
from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("distill_accuracy")


@pytest.fixture(scope="module")
def data():
    return tiny_images(per_class=(8, 8, 8))


QUICK = EvaluationProtocol(epochs=3, batch=8)


@pytest.mark.parametrize(
    "protocol",
    [
        QUICK,
        replace(QUICK, augment="none"),
        replace(QUICK, augment="dsa+cutmix"),
        replace(QUICK, optimizer="adam", lr=1e-3, loss="mse"),
        replace(QUICK, labels="learned", learned_lr=True),
    ],
    ids=["dsa", "none", "cutmix", "adam-mse", "learned"],
)
def test_every_protocol_trains_a_network_to_a_test_accuracy(bench, data, protocol):
    soft = torch.nn.functional.one_hot(data.y, 3).float() * 4
    summary = Summary(data=data, method="x", soft_labels=soft, learned_lr=0.02)
    acc = bench.evaluate(summary, data, protocol, seed=0, device=torch.device("cpu"))
    assert 0.0 <= acc <= 100.0
    again = bench.evaluate(summary, data, protocol, seed=0, device=torch.device("cpu"))
    assert again == acc  # seeded


def test_the_learned_step_size_and_labels_are_used_only_when_the_protocol_says(bench, data):
    summary = Summary(data=data, method="x", learned_lr=1e-6)
    base = bench.evaluate(summary, data, QUICK, seed=0, device=torch.device("cpu"))
    tiny_lr = bench.evaluate(summary, data, replace(QUICK, learned_lr=True), seed=0, device=torch.device("cpu"))
    assert base != tiny_lr or base == 100.0  # lr 1e-6 barely moves the network


def test_cutmix_keeps_the_box_it_reports(bench):
    x = torch.zeros(4, 1, 8, 8)
    x[2:] = 1.0
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        mixed, other, lam = bench.cutmix(x, torch.arange(4), gen)
        if other is None:
            assert lam == 1.0 and torch.equal(mixed, x)
            continue
        pasted = (mixed != x).float().mean(dim=(1, 2, 3))
        for i in range(4):
            if x[i].mean() != x[other[i]].mean():  # pasted from an image of the other value: the box is visible
                assert float(pasted[i]) == pytest.approx(1 - lam)


def test_rows_are_comparable_only_with_the_paper_preset_and_protocol_on_cifar10(bench):
    args = bench.argparse.Namespace(dataset="cifar10", protocol="paper", epochs=None, hard_labels=False, no_zca=False)
    method = DISTILLERS.get("random")()
    protocol, departs = bench.protocol_for(method, args)
    assert protocol == type(method).paper_protocol and departs == []
    assert bench.comparability(args, "paper", departs) == "yes"
    assert bench.comparability(args, "cpu", departs).startswith("no (CPU settings")
    short = bench.argparse.Namespace(**{**vars(args), "epochs": 5})
    _, departs = bench.protocol_for(method, short)
    assert departs == ["epochs"] and "protocol: epochs" in bench.comparability(short, "paper", departs)
    digits = bench.argparse.Namespace(**{**vars(args), "dataset": "digits"})
    assert bench.comparability(digits, "paper", []) == "no (digits)"
    assert bench.comparability(args, "paper", [], "kip").startswith("no (KIP's number is kernel regression")


def test_the_benchmark_prints_a_table_with_storage_and_comparability(bench, capsys):
    assert bench.main(["--methods", "random", "--seeds", "1", "--epochs", "2", "--ipc", "2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| random |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "2" and cells[2] == "2"  # ipc and images per class
    assert int(cells[3].replace(",", "")) == 2 * 10 * 64  # stored numbers: 2 images x 10 digits x 1x8x8
    assert cells[9].startswith("no (digits")


def test_a_learned_schedule_is_replayed_when_the_protocol_uses_learned_rates(bench, data):
    from proxynas.distill.base import StepSchedule

    cpu = torch.device("cpu")
    untrained = bench.evaluate(Summary(data=data, method="x"), data, replace(QUICK, epochs=0), seed=0, device=cpu)
    frozen = Summary(data=data, method="dd", learned_schedule=StepSchedule((1e-30,) * 16, 2))
    assert bench.evaluate(frozen, data, replace(QUICK, learned_lr=True), seed=0, device=cpu) == untrained
    moving = Summary(data=data, method="dd", learned_schedule=StepSchedule((0.01,) * 16, 2))
    trained = bench.evaluate(moving, data, replace(QUICK, learned_lr=True), seed=0, device=cpu)
    assert trained != untrained  # 16 real steps changed the network


def test_the_paper_preset_picks_the_protocol_of_that_preset(bench):
    args = bench.argparse.Namespace(dataset="cifar10", protocol="paper", epochs=None, hard_labels=False, no_zca=False,
                                    ipc=50, paper_settings=True, overrides=[])
    method, chosen = bench.build("mtt", args, {})
    assert chosen == "paper" and method.lr_img == 1000.0  # MTT's un-whitened IPC 50 row
    protocol, departs = bench.protocol_for(method, args, "cifar10-ipc50")
    assert protocol.zca is False and departs == []


def test_the_ticker_prints_each_phase_from_its_own_start(bench, capsys):
    ticker = bench.Ticker("mtt", prints=2)
    for done in (1, 2, 3, 4):  # experts: total 4
        ticker(done, 4)
    for done in (10, 20, 30, 40):  # iterations: a new total starts a new phase
        ticker(done, 40, loss=0.5)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" after ")[0].strip() for line in lines] == [
        "mtt 1/4", "mtt 3/4", "mtt 4/4", "mtt 10/40", "mtt 30/40", "mtt 40/40"]
    assert lines[-1].endswith("loss 0.5")


def test_skip_eval_times_the_distillation_alone_and_prints_its_progress(bench, capsys):
    assert bench.main(["--methods", "dm", "--seeds", "1", "--ipc", "2", "--threads", "1", "--skip-eval",
                       "--progress", "2", "--set", "dm.iterations=20"]) == 0
    out = capsys.readouterr().out
    assert "    dm 10/20 after " in out and "    dm 20/20 after " in out
    assert "acc   n/a" in out
    row = next(line for line in out.splitlines() if line.startswith("| dm |"))
    assert [c.strip() for c in row.strip("|").split("|")][4] == "-"  # no accuracy without an evaluation
