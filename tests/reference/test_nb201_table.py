import csv
import gzip
import math
import importlib
import os
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from proxynas.errors import ArchError, ConfigError, DataError
from proxynas.proxies import PROXIES
from proxynas.reference import NB201Table, NB201TableProxy, clear_cache, export_csv, load_table
from proxynas.spaces import NB201Space

A1 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
A2 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
A3 = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ABSENT = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


@pytest.fixture(scope="module")
def table(nb201_csv):
    return NB201Table.from_csv(nb201_csv)


@pytest.fixture(scope="module")
def csv_rows(nb201_csv):
    with gzip.open(nb201_csv, "rt", newline="") as fh:
        return list(csv.DictReader(fh))


# -- the real compact CSV -------------------------------------------------------


def test_lookups_return_the_csv_values(table, csv_rows):
    assert len(table) == len(csv_rows) == 15625
    metrics = [c for c in csv_rows[0] if c not in ("index", "arch_str")]
    assert table.columns == metrics
    for row in (csv_rows[0], csv_rows[1], csv_rows[7777], csv_rows[-1]):
        for col in metrics:
            assert table.lookup(row["arch_str"], col) == float(row[col])
        assert table.index_of(row["arch_str"]) == int(row["index"])
    picked = [csv_rows[i]["arch_str"] for i in (5, 50, 500)]
    assert table.values(picked, "cifar10_test_12ep") == [float(csv_rows[i]["cifar10_test_12ep"]) for i in (5, 50, 500)]


def test_index_and_arch_round_trip_on_every_row(table, csv_rows):
    for row in csv_rows:
        index = int(row["index"])
        assert table.arch_of(index) == row["arch_str"]
        assert table.index_of(table.arch_of(index)) == index
    assert table.archs() == [r["arch_str"] for r in csv_rows]
    assert sorted(table.archs()) == sorted(NB201Space().enumerate())


def test_lookup_canonicalises_the_arch(table):
    assert table.lookup(f"  {A1}\n", "cifar10_test_200ep") == table.lookup(A1, "cifar10_test_200ep")
    assert table.index_of(f" {A1} ") == 1


def test_column_maps_every_arch(table, csv_rows):
    col = table.column("params_MB")
    assert len(col) == 15625
    assert col[csv_rows[3]["arch_str"]] == float(csv_rows[3]["params_MB"])


def test_malformed_arch_is_an_arch_error(table):
    with pytest.raises(ArchError, match="invalid nb201 arch"):
        table.lookup("|conv~0|", "cifar10_test_200ep")
    with pytest.raises(ArchError, match="no arch with NB201 index 15625"):
        table.arch_of(15625)


def test_unknown_column_lists_the_available_ones(table):
    with pytest.raises(ConfigError) as err:
        table.lookup(A1, "cifar10_test_300ep")
    assert "cifar10_test_300ep" in str(err.value)
    assert "cifar10_test_200ep, cifar100_test_200ep" in str(err.value)
    with pytest.raises(ConfigError):
        table.column("nope")


def test_table_is_immutable(table):
    with pytest.raises(AttributeError):
        table._archs = ()
    with pytest.raises(ValueError):
        table.array("params_MB")[0] = 1.0
    archs = table.archs()
    archs.clear()
    assert len(table.archs()) == 15625


def test_params_and_12_epoch_rank_like_the_readme_says(table):
    ref = table.array("cifar10_test_200ep")
    rho_params = spearmanr(table.array("params_MB"), ref).statistic
    rho_12 = spearmanr(table.array("cifar10_test_12ep"), ref).statistic
    assert rho_params == pytest.approx(0.753, abs=0.005)
    assert rho_12 == pytest.approx(0.871, abs=0.005)


# -- missing / malformed files ---------------------------------------------------


def test_missing_file_names_the_path_and_the_fix(tmp_path):
    path = tmp_path / "nope.csv.gz"
    for load in (NB201Table.from_csv, NB201Table.from_official, NB201Table.from_path, load_table):
        with pytest.raises(DataError) as err:
            load(path)
        msg = str(err.value)
        assert msg.startswith(f"NB201 results table {path} not found; point reference.path at nb201_results.csv.gz")
        assert "NATS-tss-v1_0-3ffb9-simple" in msg and "proxynas nb201 export" in msg


def test_plain_csv_with_missing_values_and_bad_rows(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(f"index,arch_str,acc,params_MB\n3,{A1},91.5,\n7,{A2},88.25,0.5\n")
    t = NB201Table.from_csv(path)
    assert t.lookup(A1, "acc") == 91.5 and t.arch_of(7) == A2 and t.column("params_MB") == {A2: 0.5}
    with pytest.raises(DataError, match="no params_MB value for arch"):
        t.lookup(A1, "params_MB")
    with pytest.raises(ArchError, match="not in the NB201 table"):
        t.lookup(ABSENT, "acc")
    path.write_text(f"index,arch_str,acc\n0,{A1},x\n")
    with pytest.raises(DataError, match="line 2: acc value 'x' is not a number"):
        NB201Table.from_csv(path)
    path.write_text(f"arch_str,acc\n{A1},1\n")
    with pytest.raises(DataError, match="lacks column"):
        NB201Table.from_csv(path)
    path.write_text(f"index,arch_str,acc\n0,{A1},1\n1,{A1},2\n")
    with pytest.raises(DataError, match="appears twice"):
        NB201Table.from_csv(path)


# -- cache and proxy -----------------------------------------------------------------


def test_load_table_caches_until_the_file_changes(tmp_path):
    clear_cache()
    path = tmp_path / "t.csv"
    path.write_text(f"index,arch_str,acc\n0,{A1},1.0\n")
    first = load_table(path)
    assert load_table(str(path)) is first
    path.write_text(f"index,arch_str,acc\n0,{A1},2.0\n")
    os.utime(path, ns=(1, 1))
    assert load_table(path).lookup(A1, "acc") == 2.0


def test_proxy_score_equals_the_lookup(table, nb201_csv):
    assert PROXIES.get("nb201_table") is NB201TableProxy
    for column in ("cifar10_test_200ep", "cifar10_test_12ep", "params_MB"):
        proxy = NB201TableProxy(path=str(nb201_csv), column=column)
        for arch in (A1, A2, A3):
            assert proxy.score(arch, None) == table.lookup(arch, column)


def test_proxy_construction_does_not_need_the_file(tmp_path, nb201_csv):
    missing = str(tmp_path / "absent.csv.gz")
    proxy = NB201TableProxy(path=missing, column="cifar10_test_12ep")  # fine without the file
    assert NB201TableProxy(path=missing, column="made_up") is not None  # cannot check yet
    with pytest.raises(DataError, match="not found"):
        proxy.score(A1, None)
    with pytest.raises(ValueError, match="unknown column 'made_up'"):
        NB201TableProxy(path=str(nb201_csv), column="made_up")
    with pytest.raises(ConfigError, match="unknown NB201 table column"):
        NB201TableProxy(path=str(nb201_csv), column="cifar10valid_val_200ep").score(A1, None)
    with pytest.raises(ValueError, match="column must be a non-empty string"):
        NB201TableProxy(column="")
    assert NB201TableProxy() == NB201TableProxy() and hash(NB201TableProxy()) == hash(NB201TableProxy())


# -- export ------------------------------------------------------------------------------


def test_export_then_read_gives_identical_values(table, tmp_path):
    for name in ("out.csv.gz", "sub/out.csv"):
        out = export_csv(table, tmp_path / name)
        back = NB201Table.from_csv(out)
        assert back.columns == table.columns
        assert back.archs() == table.archs() and back.indices() == table.indices()
        for col in table.columns:
            assert np.array_equal(back.array(col), table.array(col))


def test_export_keeps_missing_values_missing(tmp_path):
    t = NB201Table([2, 0], [A2, A1], {"a": [1.0 / 3.0, math.nan], "b": [0.1, 2e-9]})
    back = NB201Table.from_csv(export_csv(t, tmp_path / "t.csv"))
    assert back.column("a") == {A2: 1.0 / 3.0} and back.column("b") == {A2: 0.1, A1: 2e-9}
    assert back.arch_of(0) == A1


# -- official files (small fakes in the packages' own structure) ---------------------------

FAKE_ARCHS = [A2, A1, A3]  # benchmark order: index 0, 1, 2
SEEDS = (777, 888)


def _acc(index, dataset, setname, hp, seed):
    """A distinct, recognisable final-epoch accuracy for every trial."""
    base = {"cifar10-valid": 10, "cifar10": 20, "cifar100": 30, "ImageNet16-120": 40}[dataset]
    base += {"x-valid": 0, "x-test": 1, "ori-test": 2}[setname] + (0 if hp == "200" else 5)
    return base + index + (0.25 if seed == 777 else 0.75)


def _expected(index, dataset, setname, hp):
    return sum(_acc(index, dataset, setname, hp, s) for s in SEEDS) / len(SEEDS)


def _params(index):
    return 0.1 + index / 10


def _arch_results(api_mod, index, arch, hp, datasets, epochs=2):
    """An ArchResults built with the package's own classes, as the benchmark stores it."""
    sets = {
        "cifar10-valid": ("x-valid", "ori-test"),
        "cifar10": ("ori-test",),
        "cifar100": ("x-valid", "x-test", "ori-test"),
        "ImageNet16-120": ("x-valid", "x-test", "ori-test"),
    }
    results = api_mod.ArchResults(index, arch)
    for dataset in datasets:
        for seed in SEEDS:
            classes = 100 if dataset == "cifar100" else 120 if dataset.startswith("Image") else 10
            rc = api_mod.ResultsCount(
                dataset,
                None,
                {e: 50.0 for e in range(epochs)},
                {e: 1.0 for e in range(epochs)},
                np.float64(_params(index) + (0.0 if classes == 10 else 0.05)),  # numpy scalars, like the real files
                np.float64(10.0),
                {"channel": 16, "num_cells": 5, "arch_str": arch, "class_num": classes},
                seed,
                epochs,
                [0.01],
            )
            accs, losses, times = {}, {}, {}
            for setname in sets[dataset]:
                for e in range(epochs):
                    key = f"{setname}@{e}"
                    last = e == epochs - 1
                    accs[key] = _acc(index, dataset, setname, hp, seed) if last else 1.0
                    losses[key], times[key] = 0.5, 0.1
            rc.update_eval(accs, losses, times)
            results.update(dataset, seed, rc)
    return results


ALL_DATASETS = ("cifar10-valid", "cifar10", "cifar100", "ImageNet16-120")


def _fake_nb201_pth(path, v1_0):
    api_mod = importlib.import_module("nas_201_api")
    arch2infos = {}
    for index, arch in enumerate(FAKE_ARCHS):
        less = ("cifar10-valid",) if v1_0 else ALL_DATASETS  # v1.0 trained hp=12 on CIFAR-10-valid only
        arch2infos[index] = {
            "less": _arch_results(api_mod, index, arch, "12", less).state_dict(),
            "full": _arch_results(api_mod, index, arch, "200", ALL_DATASETS).state_dict(),
        }
    data = {"meta_archs": list(FAKE_ARCHS), "arch2infos": arch2infos, "evaluated_indexes": list(arch2infos)}
    torch.save(data, path)
    return path


def _fake_nats_simple_dir(root):
    nats = importlib.import_module("nats_bench")
    root.mkdir()
    meta = {"meta_archs": list(FAKE_ARCHS), "total_archs": len(FAKE_ARCHS), "arch2infos": None, "evaluated_indexes": set()}
    nats.pickle_save(meta, str(root / "meta.pickle"))
    for index, arch in enumerate(FAKE_ARCHS):
        hp2info = OrderedDict(
            (hp, _arch_results(nats, index, arch, hp, ALL_DATASETS).state_dict()) for hp in ("12", "200")
        )
        nats.pickle_save(hp2info, str(root / f"{index:06d}.pickle"))
    return root


def _check_full_columns(t):
    for index, arch in enumerate(FAKE_ARCHS):
        assert t.arch_of(index) == arch and t.index_of(arch) == index
        assert t.lookup(arch, "cifar10_test_200ep") == pytest.approx(_expected(index, "cifar10", "ori-test", "200"))
        assert t.lookup(arch, "cifar100_test_200ep") == pytest.approx(_expected(index, "cifar100", "x-test", "200"))
        assert t.lookup(arch, "imagenet16_test_200ep") == pytest.approx(
            _expected(index, "ImageNet16-120", "x-test", "200")
        )
        assert t.lookup(arch, "cifar10valid_val_200ep") == pytest.approx(
            _expected(index, "cifar10-valid", "x-valid", "200")
        )
        assert t.lookup(arch, "params_MB") == pytest.approx(_params(index))


def test_nb201_v1_1_pth_through_the_package(tmp_path):
    path = _fake_nb201_pth(tmp_path / "NAS-Bench-201-v1_1-096897.pth", v1_0=False)
    if tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 6):
        with pytest.raises(Exception):  # the default weights_only=True rejects the benchmark's numpy scalars
            torch.load(path)
    load = torch.load
    t = NB201Table.from_official(path)
    assert torch.load is load  # the weights_only patch is undone
    assert len(t) == 3
    _check_full_columns(t)
    for index, arch in enumerate(FAKE_ARCHS):
        assert t.lookup(arch, "cifar10_test_12ep") == pytest.approx(_expected(index, "cifar10", "ori-test", "12"))
        assert t.lookup(arch, "cifar100_val_12ep") == pytest.approx(_expected(index, "cifar100", "x-valid", "12"))
        assert t.lookup(arch, "imagenet16_val_12ep") == pytest.approx(
            _expected(index, "ImageNet16-120", "x-valid", "12")
        )
    assert not any(c.endswith("_nb201v1_0") for c in t.columns)


def test_nb201_v1_0_pth_has_only_the_columns_it_holds(tmp_path):
    path = _fake_nb201_pth(tmp_path / "NAS-Bench-201-v1_0-e61699.pth", v1_0=True)
    t = NB201Table.from_path(path)
    _check_full_columns(t)
    assert "cifar10_test_12ep" not in t.columns and "cifar100_test_12ep" not in t.columns
    assert "cifar10valid_val_12ep" in t.columns
    assert t.lookup(A1, "cifar10_test_200ep_nb201v1_0") == t.lookup(A1, "cifar10_test_200ep")
    assert t.lookup(A1, "cifar10valid_val_200ep_nb201v1_0") == t.lookup(A1, "cifar10valid_val_200ep")


def test_nats_simple_directory_through_the_package(tmp_path):
    root = _fake_nats_simple_dir(tmp_path / "NATS-tss-v1_0-3ffb9-simple")
    t = NB201Table.from_official(root)
    _check_full_columns(t)
    for index, arch in enumerate(FAKE_ARCHS):
        assert t.lookup(arch, "cifar10_test_12ep") == pytest.approx(_expected(index, "cifar10", "ori-test", "12"))
    # the proxy reads official files too, and an export of them round-trips
    assert NB201TableProxy(path=str(root)).score(A1, None) == t.lookup(A1, "cifar10_test_200ep")
    back = NB201Table.from_csv(export_csv(t, tmp_path / "nats.csv.gz"))
    assert back.columns == t.columns
    for col in t.columns:
        assert back.values(FAKE_ARCHS, col) == t.values(FAKE_ARCHS, col)


def test_official_reader_reports_a_missing_package(tmp_path, monkeypatch):
    pth = tmp_path / "NAS-Bench-201-v1_1-096897.pth"
    pth.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "nas_201_api", None)  # import now raises ImportError
    with pytest.raises(DataError, match="pip install nas-bench-201"):
        NB201Table.from_official(pth)
    monkeypatch.setitem(sys.modules, "nats_bench", None)
    with pytest.raises(DataError, match="pip install nats_bench"):
        NB201Table.from_official(tmp_path)


def test_official_reader_rejects_broken_files(tmp_path):
    importlib.import_module("nas_201_api")
    pth = tmp_path / "NAS-Bench-201-v1_1-096897.pth"
    torch.save({"meta_archs": [A1]}, pth)
    with pytest.raises(DataError, match="not a readable NAS-Bench-201 file"):
        NB201Table.from_official(pth)
    other = tmp_path / "results.json"
    other.write_text("{}")
    with pytest.raises(DataError, match="not an official NB201 file"):
        NB201Table.from_official(other)


def test_cli_export_writes_the_compact_csv(tmp_path, capsys):
    from proxynas.cli import main

    path = _fake_nb201_pth(tmp_path / "NAS-Bench-201-v1_1-096897.pth", v1_0=False)
    out = tmp_path / "out.csv.gz"
    assert main(["nb201", "export", str(path), str(out)]) == 0
    assert "wrote 3 architectures" in capsys.readouterr().out
    back = NB201Table.from_csv(out)
    assert back.archs() == list(FAKE_ARCHS)
    assert back.values(FAKE_ARCHS, "cifar10_test_200ep") == NB201Table.from_official(path).values(
        FAKE_ARCHS, "cifar10_test_200ep"
    )


def test_cli_export_of_a_missing_file_is_one_line(tmp_path, capsys):
    from proxynas.cli import main

    assert main(["nb201", "export", str(tmp_path / "NAS-Bench-201-v1_1-096897.pth"), str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_a_missing_table_names_the_setting_that_points_at_it(tmp_path):
    from proxynas.errors import DataError
    from proxynas.reference.nb201_table import load_table

    with pytest.raises(DataError, match=r"point sample.table at"):
        load_table(tmp_path / "gone.csv.gz", setting="sample.table")
    with pytest.raises(DataError, match=r"point reference.path at"):
        load_table(tmp_path / "gone.csv.gz")
