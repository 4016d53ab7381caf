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
