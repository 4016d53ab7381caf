import io
import math

import numpy as np
import torch
from PIL import Image

from proxynas.data.types import ImageData
from proxynas.plots import image_grid_png, scatter_png
from proxynas.report import format_report

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
    header, _, first, second = text.splitlines()[1:]
    assert second.startswith("kcenter:val_acc@25% +0.500")  # the name is never cut or run into the numbers
    assert header.index("Spearman") == first.index("+0.500") == second.index("+0.500")
