import pytest

from proxynas.engine import Graph, Stage
from proxynas.errors import GraphError, ProxynasError


def f(**kwargs):
    return None


def stage(name, inputs=(), outputs=(), **kw):
    return Stage(name, f, inputs=tuple(inputs), outputs=tuple(outputs), **kw)


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    assert isinstance(exc_info.value, ProxynasError)
    return msg


def test_duplicate_stage_name():
    with pytest.raises(GraphError) as e:
        Graph([stage("a", outputs=["x"]), stage("a", outputs=["y"])])
    msg = one_line(e)
    assert "'a'" in msg and "unique" in msg


def test_two_producers_of_one_output():
    with pytest.raises(GraphError) as e:
        Graph([stage("a", outputs=["x"]), stage("b", outputs=["x"])])
    msg = one_line(e)
    assert "'x'" in msg and "'a'" in msg and "'b'" in msg and "rename" in msg


def test_missing_input_names_fix_and_suggests():
    with pytest.raises(GraphError) as e:
        Graph([stage("a", outputs=["dataset"]), stage("b", inputs=["datset"], outputs=["y"])])
    msg = one_line(e)
    assert "'b'" in msg and "'datset'" in msg and "external_inputs" in msg and "'dataset'" in msg


def test_external_input_satisfies_input():
    g = Graph([stage("b", inputs=["x"], outputs=["y"])], external_inputs=["x"])
    assert g.producers("x") == [] and g.producers("y") == ["b"]


def test_external_input_also_produced_is_an_error():
    with pytest.raises(GraphError) as e:
        Graph([stage("a", outputs=["x"])], external_inputs=["x"])
    assert "external" in one_line(e)


def test_cycle_names_the_stages():
    with pytest.raises(GraphError) as e:
        Graph(
            [
                stage("src", outputs=["s"]),
                stage("a", inputs=["s", "c"], outputs=["a"]),
                stage("b", inputs=["a"], outputs=["b"]),
                stage("c", inputs=["b"], outputs=["c"]),
            ]
        )
    msg = one_line(e)
    assert "cycle" in msg and "a -> b -> c -> a" in msg
    assert "src" not in msg


def test_self_cycle():
    with pytest.raises(GraphError) as e:
        stage("a", inputs=["x"], outputs=["x"])
    assert "cycle" in one_line(e)


def test_bad_stage_name_and_reserved_input():
    with pytest.raises(GraphError):
        stage("../evil", outputs=["x"])
    with pytest.raises(GraphError):
        stage("a", inputs=["params"], outputs=["x"])


def test_function_must_accept_inputs_and_params():
    def g(x):
        return x

    with pytest.raises(GraphError) as e:
        Graph([Stage("s", g, inputs=("y",), outputs=("z",))], external_inputs=["y"])
    assert "'y'" in one_line(e)
    with pytest.raises(GraphError) as e:
        Graph([Stage("s", g, inputs=("x",), outputs=("z",), params={"a": 1})], external_inputs=["x"])
    assert "params" in one_line(e)


def test_uncanonicalisable_params_rejected():
    class Opaque:
        pass

    def g(params):
        return 1

    with pytest.raises(GraphError) as e:
        Graph([Stage("s", g, inputs=(), outputs=("z",), params={"o": Opaque()})])
    assert "Opaque" in one_line(e)


def diamond_stages():
    return [
        stage("report", inputs=["left", "right"], outputs=["report"]),
        stage("left", inputs=["root"], outputs=["left"]),
        stage("root", outputs=["root"]),
        stage("right", inputs=["root"], outputs=["right"]),
        stage("other", outputs=["other"]),
    ]


def test_order_is_topological_and_ties_follow_declaration():
    g = Graph(diamond_stages())
    names = [s.name for s in g.order()]
    assert names == ["root", "left", "right", "report", "other"]
    # deterministic: same answer every time and for an equal graph
    assert [s.name for s in Graph(diamond_stages()).order()] == names
    assert [s.name for s in g] == names


def test_order_ties_by_declaration_order_for_independent_stages():
    g = Graph([stage("z", outputs=["1"]), stage("a", outputs=["2"]), stage("m", outputs=["3"])])
    assert [s.name for s in g.order()] == ["z", "a", "m"]


def test_upstream_downstream():
    g = Graph(diamond_stages())
    assert g.upstream("report") == ["root", "left", "right"]
    assert g.upstream("left") == ["root"]
    assert g.upstream("root") == []
    assert g.downstream("root") == ["left", "right", "report"]
    assert g.downstream("left") == ["report"]
    assert g.dependencies("report") == ["left", "right"]
    assert g.consumers("root") == ["left", "right"]
    with pytest.raises(GraphError, match="did you mean 'report'"):
        g.upstream("reprot")


def test_subgraph_keeps_only_what_targets_need():
    g = Graph(diamond_stages())
    sub = g.subgraph(["left"])
    assert [s.name for s in sub.order()] == ["root", "left"]
    sub = g.subgraph(["report", "other"])
    assert {s.name for s in sub.order()} == {"root", "left", "right", "report", "other"}


def test_subgraph_keeps_needed_external_inputs_only():
    g = Graph(
        [stage("a", inputs=["x"], outputs=["a"]), stage("b", inputs=["y"], outputs=["b"])],
        external_inputs=["x", "y"],
    )
    assert g.subgraph(["a"]).external_inputs == ("x",)
    with pytest.raises(GraphError):
        g.subgraph([])
