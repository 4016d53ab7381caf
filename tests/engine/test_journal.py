"""The journal of a running stage: finished work survives a kill and is read back on the rerun."""

import math

import pytest

from proxynas.engine import Cache, Graph, Journal, Runner, Stage


@pytest.mark.parametrize("on_disk", [True, False])
def test_records_come_back_exactly_including_nan_and_infinities(tmp_path, on_disk):
    journal = Journal(tmp_path / "j" if on_disk else None)
    value = {"raw": {"values": {"val_acc": 0.1 + 0.2, "sotl": -math.inf}, "curve": [{"val_loss": None}]}, "s": 1e-300}
    journal.put("|nor_conv_3x3~0|+|...|", value)
    journal.put("nan", float("nan"))
    assert journal.get("|nor_conv_3x3~0|+|...|") == value and journal.get("other") is None
    assert math.isnan(journal.get("nan")) and len(journal) == 2
    journal.clear()
    assert journal.get("nan") is None and len(journal) == 0


def test_an_unreadable_record_is_redone_not_trusted(tmp_path):
    journal = Journal(tmp_path)
    journal.put("a", 1.0)
    next(tmp_path.glob("*.json")).write_text('{"name": "a", "val')  # torn by a crash
    assert journal.get("a") is None
    assert not list(tmp_path.glob(".tmp-*"))


def test_the_runner_keeps_a_failed_stages_journal_and_clears_it_once_the_stage_is_cached(tmp_path):
    calls = []

    def score(items, journal, params=None):
        out = []
        for item in items:
            done = journal.get(str(item))
            if done is None:
                calls.append(item)
                if item == params["fail_at"]:
                    raise RuntimeError("killed")
                done = item * 10
                journal.put(str(item), done)
            out.append(done)
        return out

    def runner(fail_at):
        graph = Graph([Stage("score", score, inputs=("items",), outputs=("scores",), params={"fail_at": fail_at})],
                      external_inputs=["items"])
        return Runner(graph, Cache(tmp_path))

    first = runner(fail_at=3)
    with pytest.raises(RuntimeError, match="killed"):
        first.run({"items": [1, 2, 3, 4]})
    key = first.status({"items": [1, 2, 3, 4]})[0].key
    journal = Cache(tmp_path).journal("score", key)
    assert len(journal) == 2  # items 1 and 2 finished before the failure
    calls.clear()
    graph = Graph([Stage("score", score, inputs=("items",), outputs=("scores",), params={"fail_at": 3})],
                  external_inputs=["items"])
    resumed = Runner(graph, Cache(tmp_path))
    journal.put("3", 30)  # as if 3 had finished before a kill
    assert resumed.run({"items": [1, 2, 3, 4]})["scores"] == [10, 20, 30, 40]
    assert calls == [4] and len(journal) == 0  # only the unfinished item ran; the journal is gone
