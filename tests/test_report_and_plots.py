import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

from proxynas.data.types import ImageData
from proxynas.plots import image_grid_png, learning_curves_png, rank_title, rank_vs_rank_png, ranks, scatter_png
from proxynas.report import format_report

from tests.quickstart import QUICKSTART, TINY

PNG = b"\x89PNG\r\n\x1a\n"


def _pixels(png: bytes) -> np.ndarray:
    assert png.startswith(PNG)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


def test_image_grid_shows_each_class_in_its_row():
    # class 0 black, class 1 white, class 2 mid-grey: the grid's rows must show them in that order
    x = torch.cat([torch.full((2, 3, 8, 8), v) for v in (0.0, 1.0, 0.5)])
    data = ImageData((x - 0.5) / 0.2, torch.tensor([0, 0, 1, 1, 2, 2]), ("a", "b", "c"), (0.5,) * 3, (0.2,) * 3)
    img = _pixels(image_grid_png(data, "t"))
    h, w, _ = img.shape
    assert h > 100 and w > 100
    # the band of pixel rows crossing two black images (class 0) lies above the band crossing two grey
    # ones (class 2); a band is 5+ consecutive rows, so the axes' 1-pixel frame lines are not one
    def band(mask):
        rows = np.where(mask.all(axis=2).sum(axis=1) > 40)[0]
        runs = np.split(rows, np.where(np.diff(rows) > 1)[0] + 1)
        (run,) = [r for r in runs if len(r) >= 5]
        return run

    dark, grey = band(img < 30), band(np.abs(img - 128) < 20)
    assert dark.max() < grey.min()


def test_scatter_draws_one_panel_per_proxy_with_its_points():
    one = _pixels(scatter_png({"dm": ([1, 2, 3], [3, 2, 1])}, xlabel="x", ylabel="y"))
    two = _pixels(scatter_png({"dm": ([1, 2, 3], [3, 2, 1]), "params": ([1, 2, 3], [1, 2, 3])}, xlabel="x", ylabel="y"))
    assert two.shape[1] > 1.7 * one.shape[1]  # a second panel beside the first
    flipped = _pixels(scatter_png({"dm": ([1, 2, 3], [1, 2, 3])}, xlabel="x", ylabel="y"))
    assert flipped.shape == one.shape and (flipped != one).any()  # the points are drawn where the data says
    blue = lambda img: ((img[..., 2] - img[..., 0]) > 60).sum()  # matplotlib's first colour is blue
    assert blue(one) > 50 and blue(two) > 1.5 * blue(one)


def test_format_report_has_a_row_per_proxy_and_ci():
    row = {
        "proxy": "dm", "spearman": 0.5, "spearman_lo": 0.1, "spearman_hi": 0.8,
        "kendall": 0.4, "kendall_lo": 0.0, "kendall_hi": 0.7, "topk_precision": 0.6,
        "topk_spearman": math.nan, "proxy_seconds": 12.0, "reference_seconds": 100.0,
    }
    text = format_report({"rows": [row, {**row, "proxy": "params"}], "num_archs": 20, "top_k": 5, "ci": 0.95,
                          "reference_mean": 90.0, "reference_min": 80.0, "reference_max": 95.0, "reference_seconds": 100.0})
    lines = text.splitlines()
    assert lines[0].startswith("20 architectures; reference: mean test accuracy 90.00%")
    assert "Spearman [95% CI]" in lines[1]
    assert lines[3].startswith("dm") and "+0.500 [+0.100, +0.800]" in lines[3] and "nan" in lines[3]
    assert lines[4].startswith("params")


def test_report_keeps_a_combining_proxys_components_in_results_and_evaluations(tmp_path):
    from proxynas.config.pipeline import ReportConfig
    from proxynas.ledger import Ledger
    from proxynas.pipeline import Row, report
    from proxynas.spaces import NB201Space

    space = NB201Space(channels=4, cells_per_stage=1)
    archs = space.sample(3, seed=0)
    reference = [{"arch": a, "value": 90.0 - i, "seconds": 1.0} for i, a in enumerate(archs)]
    scores = [
        {"arch": a, "value": -float(i), "seconds": 0.1,
         "components": {"expressivity": 3.0 - i, "trainability": -math.inf}}
        for i, a in enumerate(archs)
    ]
    rows = (Row("az_nas", "baseline", "baseline_az_nas", "scores_az_nas"),
            Row("params", "baseline", "baseline_params", "scores_params"))
    params = {"report": ReportConfig(top_k=3, bootstrap=10), "space": space, "rows": rows}
    plain = [{"arch": a, "value": float(i), "seconds": 0.1} for i, a in enumerate(archs)]
    out = report(archs, reference, params, scores_az_nas=scores, scores_params=plain)
    results = out["results"].rows
    assert [r["az_nas.expressivity"] for r in results] == [3.0, 2.0, 1.0]
    assert results[0]["az_nas.trainability"] == -math.inf and "params.expressivity" not in results[0]
    assert "az_nas.expressivity" in out["results"].to_csv().splitlines()[0]
    # the evaluations the ledger hook records keep the components too
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    for ev in out["evaluations"]:
        ledger.record(f"t/{ev.row}", ev.records, cardinalities=ev.cardinalities, attrs=ev.attrs)
    back = sorted(ledger.evaluations("t/az_nas"), key=lambda e: -e["value"])
    assert [e["az_nas.expressivity"] for e in back] == [3.0, 2.0, 1.0]
    assert back[0]["az_nas.trainability"] == -math.inf
    assert "az_nas.expressivity" not in ledger.evaluations("t/params")[0]


def test_format_report_widens_the_name_column_for_component_rows():
    row = {
        "proxy": "dm", "spearman": 0.5, "spearman_lo": 0.1, "spearman_hi": 0.8,
        "kendall": 0.4, "kendall_lo": 0.0, "kendall_hi": 0.7, "topk_precision": 0.6,
        "topk_spearman": 0.2, "proxy_seconds": 12.0, "reference_seconds": 100.0,
    }
    rows = [row, {**row, "proxy": "kcenter:val_acc@25%"}]
    text = format_report({"rows": rows, "num_archs": 20, "top_k": 5, "ci": 0.95, "reference_mean": 90.0,
                          "reference_min": 80.0, "reference_max": 95.0, "reference_seconds": 100.0})
    header, _, first, second = text.splitlines()[1:5]  # then the verdict line
    assert second.startswith("kcenter:val_acc@25% +0.500")  # the name is never cut or run into the numbers
    assert header.index("Spearman") == first.index("+0.500") == second.index("+0.500")


def test_rank_title_carries_spearman_and_kendall_with_their_interval():
    metrics = {"spearman": 0.512, "spearman_lo": 0.104, "spearman_hi": 0.8, "kendall": -0.25,
               "kendall_lo": -0.6, "kendall_hi": 0.125, "topk_precision": 0.6}
    assert rank_title("dm", metrics, 0.95).splitlines() == [
        "dm", "Spearman +0.51 [95% CI +0.10, +0.80]", "Kendall -0.25 [95% CI -0.60, +0.12]"]
    assert "[90% CI" in rank_title("dm", metrics, 0.9)
    # no bootstrap (or too few archs): the interval is undefined and left out, the value stays
    bare = {"spearman": 1.0, "spearman_lo": math.nan, "spearman_hi": math.nan, "kendall": math.nan}
    assert rank_title("params", bare, 0.95).splitlines() == ["params", "Spearman +1.00", "Kendall nan"]


def test_ranks_put_the_highest_value_first_and_share_ties():
    assert ranks([3.0, 1.0, 2.0, 2.0, 5.0]) == [2.0, 5.0, 3.5, 3.5, 1.0]
    assert ranks([-math.inf, 0.5, 7.0]) == [3.0, 2.0, 1.0]  # a proxy's "cannot train" ranks last
    with pytest.raises(ValueError, match="value 1 is NaN"):
        ranks([1.0, math.nan])


def test_rank_vs_rank_puts_a_perfect_proxy_on_the_diagonal():
    ref = [90.0, 80.0, 70.0, 60.0, 50.0]
    perfect = _pixels(rank_vs_rank_png({"dm": ([5, 4, 3, 2, 1], ref)}, top_k=2))
    reversed_ = _pixels(rank_vs_rank_png({"dm": ([1, 2, 3, 4, 5], ref)}, top_k=2))
    assert perfect.shape == reversed_.shape and perfect.shape[0] > 200
    # the points of a proxy ranking like the reference lie on the rising diagonal: its bottom-left and
    # top-right are blue, the top-left (reference rank 1, proxy rank 5) is not; the reversed proxy is the mirror
    blue = (perfect[..., 2] - perfect[..., 0]) > 60
    flipped = (reversed_[..., 2] - reversed_[..., 0]) > 60
    h, w = blue.shape
    top_left = (slice(0, h // 2), slice(0, w // 2))
    bottom_left = (slice(h // 2, h), slice(0, w // 2))
    assert blue[bottom_left].sum() > 20 and blue[top_left].sum() < blue[bottom_left].sum() / 2
    assert flipped[top_left].sum() > 20 and flipped[bottom_left].sum() < flipped[top_left].sum() / 2
    two = _pixels(rank_vs_rank_png({"dm": ([5, 4, 3, 2, 1], ref), "params": ([1, 2, 3, 4, 5], ref)}))
    assert two.shape[1] > 1.7 * perfect.shape[1]  # one panel per row


def _curve(epochs, rate):
    return [{"epoch": e, "steps": 10 * e, "train_loss": 2.3 * math.exp(-rate * e), "val_loss": None,
             "val_acc": 90.0 - 80.0 * math.exp(-rate * e) if e % 2 == 0 else None} for e in range(1, epochs + 1)]


def test_learning_curves_colour_only_the_highlighted_archs():
    curves = {f"a{i}": _curve(10, 0.1 + 0.05 * i) for i in range(6)}
    orange = lambda img: ((img[..., 0] - img[..., 2]) > 150).sum()  # matplotlib's tab:orange is (255, 127, 14)
    grey = _pixels(learning_curves_png(curves))
    marked = _pixels(learning_curves_png(curves, highlight={"a0", "a5"}, highlight_label="reference top 2"))
    assert grey.shape[0] > 200 and grey.shape[1] > 500
    assert orange(grey) == 0 and orange(marked) > 100
    # an arch measured only after its last epoch (curve_every=0) is still drawn
    once = {"a": [{"epoch": 1, "train_loss": 2.0, "val_acc": None}, {"epoch": 2, "train_loss": 1.5, "val_acc": 40.0}]}
    assert orange(_pixels(learning_curves_png(once, highlight={"a"}))) > orange(_pixels(learning_curves_png(once)))


def _toy_report_inputs():
    from proxynas.config.pipeline import ReportConfig
    from proxynas.pipeline import Row
    from proxynas.spaces import NB201Space

    space = NB201Space(channels=4, cells_per_stage=1)
    archs = space.sample(5, seed=0)
    reference = [{"arch": a, "value": 90.0 - 3 * i, "seconds": 1.0, "curve": _curve(4, 0.2 + 0.1 * i)}
                 for i, a in enumerate(archs)]
    dm = [{"arch": a, "value": float(v), "seconds": 0.1, "curve": _curve(4, 0.1 * v)}
          for a, v in zip(archs, [5, 3, 4, 1, 2])]
    params_ = [{"arch": a, "value": float(v), "seconds": 0.0} for a, v in zip(archs, [1, 2, 3, 4, 5])]
    rows = (Row("dm", "distilled", "proxy_dm", "scores_dm"), Row("params", "baseline", "baseline_params", "scores_params"))
    curves = (("dm", "scores_dm", "learning_curves_dm"), ("reference", "reference", "learning_curves_reference"))
    params = {"report": ReportConfig(top_k=3, bootstrap=20), "space": space, "rows": rows, "curves": curves}
    return archs, reference, params, {"scores_dm": dm, "scores_params": params_}


def test_report_titles_its_panels_with_each_rows_rank_metrics(monkeypatch):
    import proxynas.pipeline as pipeline

    archs, reference, params, inputs = _toy_report_inputs()
    drawn = {}
    real = pipeline.scatter_png

    def spy(series, **kwargs):
        drawn.update(kwargs["titles"])
        return real(series, **kwargs)

    monkeypatch.setattr(pipeline, "scatter_png", spy)
    out = pipeline.report(archs, reference, params, **inputs)
    by_row = {r["proxy"]: r for r in out["rank_table"].rows}
    assert set(drawn) == {"dm", "params"}
    for name, title in drawn.items():
        row = by_row[name]
        assert title.splitlines()[0] == name
        assert f"Spearman {row['spearman']:+.2f}" in title and f"Kendall {row['kendall']:+.2f}" in title
    assert by_row["params"]["spearman"] == pytest.approx(-1.0) and "Spearman -1.00" in drawn["params"]
    # the rank-vs-rank and learning-curve figures are outputs with PNG bytes, named as their artifacts
    for name in ("rank_vs_rank", "learning_curves_dm", "learning_curves_reference"):
        figure = out[name]
        assert figure.name == name and figure.png.startswith(PNG) and len(figure.png) > 5000
    assert "learning_curves_params" not in out  # a proxy without curves gets no figure


def test_a_pipeline_run_yields_the_rank_and_learning_curve_figures(tmp_path):
    from proxynas.app import build_runner
    from proxynas.config import load_config
    from proxynas.pipeline import build_graph, is_tracked_output

    config = load_config(QUICKSTART, [*TINY, "distill.methods={dm: {iterations: 3}}",
                                      f"run.cache_dir={tmp_path / 'cache'}"])
    stage = build_graph(config).graph.stage("report")
    # every row whose proxy trains gets a figure, the reference too; the parameter count has no curves
    figures = ["rank_vs_rank", "learning_curves_dm", "learning_curves_reference"]
    assert [o for o in stage.outputs if o.startswith(("rank_", "learning_"))] == ["rank_table", *figures]
    assert all(is_tracked_output(name) for name in figures)  # logged again when the report is cached
    outputs = build_runner(config).run(targets=["report"])
    for name in figures:
        assert outputs[name].png.startswith(PNG) and len(outputs[name].png) > 5000
    curves = _pixels(outputs["learning_curves_dm"].png)
    assert ((curves[..., 0] - curves[..., 2]) > 150).sum() > 20  # the reference's top 3 of 5 are highlighted


def _row(name, spearman, lo, hi, kind="distilled"):
    return {"proxy": name, "kind": kind, "spearman": spearman, "spearman_lo": lo, "spearman_hi": hi,
            "kendall": 0.0, "kendall_lo": 0.0, "kendall_hi": 0.0, "topk_precision": 0.0, "topk_spearman": 0.0,
            "proxy_seconds": 1.0, "reference_seconds": 1.0}


def _report(rows):
    return {"rows": rows, "num_archs": 20, "top_k": 5, "ci": 0.95, "reference_mean": 90.0, "reference_min": 10.0,
            "reference_max": 99.0, "reference_seconds": 1.0}


def test_the_table_ends_with_the_best_row_and_whether_distillation_beat_the_random_subset():
    from proxynas.report import verdict

    rows = [_row("dm", 0.87, 0.62, 0.98), _row("random", 0.90, 0.67, 0.99), _row("params", -0.06, -0.5, 0.4, "baseline")]
    text = format_report(_report(rows), random_rows=frozenset({"random"}))
    assert text.splitlines()[-1] == (
        "Best ranking: random (Spearman +0.900 [+0.670, +0.990])."
        " Distillation did not beat the random subset: dm +0.870 vs random +0.900,"
        " within dm's 95% CI, so not resolved by 20 architectures."
    )
    clear = verdict(_report([_row("dm", 0.9, 0.8, 0.95), _row("random", 0.3, 0.1, 0.5)]), frozenset({"random"}))
    assert clear.endswith("Distillation beat the random subset: dm +0.900 vs random +0.300.")
    # without a random row there is nothing to compare with; NaN rows are not "best"
    alone = verdict(_report([_row("dm", math.nan, math.nan, math.nan), _row("params", 0.2, 0.0, 0.4, "baseline")]))
    assert alone == "Best ranking: params (Spearman +0.200 [+0.000, +0.400])."


def test_random_subset_rows_are_the_rows_of_the_random_coreset_whatever_their_name():
    from proxynas.config.pipeline import load_config
    from proxynas.pipeline import build_graph, random_subset_rows
    from tests.quickstart import QUICKSTART

    config = load_config(QUICKSTART, ["distill.methods={dm: {iterations: 2}, subset: {name: random}}",
                                      "proxy.scores=[val_acc, sotl_1]"])
    assert random_subset_rows(config, build_graph(config)) == {"subset", "subset:sotl_1"}
