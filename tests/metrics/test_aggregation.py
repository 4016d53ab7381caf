import math

import pytest

from proxynas.metrics.aggregation import average_ranks, log_rank_aggregate


def test_average_ranks_share_ties_and_put_nan_lowest():
    assert average_ranks([10.0, 30.0, 20.0, 20.0]).tolist() == [1.0, 4.0, 2.5, 2.5]
    assert average_ranks([5.0, math.nan, -math.inf, 7.0]).tolist() == [3.0, 1.5, 1.5, 4.0]
    assert average_ranks([2.0, 2.0, 2.0]).tolist() == [2.0, 2.0, 2.0]


def test_log_rank_aggregation_by_hand():
    assert log_rank_aggregate({"a": [1.0, 2.0, 3.0], "b": [3.0, 2.0, 1.0]}) == pytest.approx(
        [math.log(1 / 3), 2 * math.log(2 / 3), math.log(1 / 3)]
    )
    # three proxies over four archs; ranks per arch (1 = worst): a 1,2,3,4  b 2,1,4,3  c 4,3,2,1
    got = log_rank_aggregate({"a": [1, 2, 3, 4], "b": [5, 1, 9, 7], "c": [0.4, 0.3, 0.2, 0.1]})
    expected = [math.log(1 / 4) + math.log(2 / 4) + math.log(4 / 4), math.log(2 / 4) + math.log(1 / 4) + math.log(3 / 4),
                math.log(3 / 4) + math.log(4 / 4) + math.log(2 / 4), math.log(4 / 4) + math.log(3 / 4) + math.log(1 / 4)]
    assert got == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="same candidates"):
        log_rank_aggregate({"a": [1.0, 2.0], "b": [1.0]})
