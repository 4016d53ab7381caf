import math

import torch

from proxynas.data.types import ImageData
from proxynas.plots import image_grid_png, scatter_png
from proxynas.report import format_report

PNG = b"\x89PNG\r\n\x1a\n"


def test_image_grid_and_scatter_are_pngs():
    data = ImageData(torch.randn(6, 3, 8, 8), torch.tensor([0, 0, 1, 1, 2, 2]), ("a", "b", "c"), (0.5,) * 3, (0.2,) * 3)
    assert image_grid_png(data, "t").startswith(PNG)
    assert scatter_png({"dm": ([1, 2, 3], [3, 2, 1]), "params": ([1, 2, 3], [1, 2, 3])}, xlabel="x", ylabel="y").startswith(PNG)


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


def test_report_keeps_a_combining_proxys_components_in_results_and_ledger(tmp_path):
    from proxynas.config.pipeline import ReportConfig
    from proxynas.ledger import Ledger
    from proxynas.pipeline import report
    from proxynas.spaces import NB201Space

    space = NB201Space(channels=4, cells_per_stage=1)
    archs = space.sample(3, seed=0)
    reference = [{"arch": a, "value": 90.0 - i, "seconds": 1.0} for i, a in enumerate(archs)]
    scores = [
        {"arch": a, "value": -float(i), "seconds": 0.1,
         "components": {"expressivity": 3.0 - i, "trainability": -math.inf}}
        for i, a in enumerate(archs)
    ]
    params = {"report": ReportConfig(top_k=3, bootstrap=10), "space": space, "run_name": "t",
              "rows": [{"name": "az_nas", "kind": "baseline", "distilled": False},
                       {"name": "params", "kind": "baseline", "distilled": False}]}
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    plain = [{"arch": a, "value": float(i), "seconds": 0.1} for i, a in enumerate(archs)]
    out = report(archs, reference, params, ledger=ledger, scores_az_nas=scores, scores_params=plain)
    rows = out["results"].rows
    assert [r["az_nas.expressivity"] for r in rows] == [3.0, 2.0, 1.0]
    assert rows[0]["az_nas.trainability"] == -math.inf and "params.expressivity" not in rows[0]
    assert "az_nas.expressivity" in out["results"].to_csv().splitlines()[0]
    back = sorted(ledger.evaluations("t/az_nas"), key=lambda e: -e["value"])
    assert [e["az_nas.expressivity"] for e in back] == [3.0, 2.0, 1.0]
    assert back[0]["az_nas.trainability"] == -math.inf
    assert "az_nas.expressivity" not in ledger.evaluations("t/params")[0]
