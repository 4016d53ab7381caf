from pathlib import Path

import pytest

from proxynas.config import dump_config, load_config
from proxynas.config.pipeline import PipelineConfig
from proxynas.errors import ConfigError

PIPELINES = sorted((Path(__file__).resolve().parents[2] / "pipelines").glob("*.yaml"))


def test_there_are_pipelines():
    assert any(p.name == "quickstart.yaml" for p in PIPELINES)


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_every_pipeline_file_loads_and_round_trips(path, tmp_path):
    config = load_config(path)
    assert isinstance(config, PipelineConfig)
    assert config.run.name == path.stem or config.run.name
    again = tmp_path / "resolved.yaml"
    again.write_text(dump_config(config))
    assert load_config(again) == config


def test_quickstart_plugins_are_resolved():
    config = load_config(PIPELINES[0].parent / "quickstart.yaml")
    assert type(config.data).name == "digits"
    assert type(config.space).name == "nb201"
    assert set(config.distill.methods) == {"dm", "random", "herding", "kcenter"}
    assert type(config.distill.methods["dm"]).name == "dm"
    assert "params" in config.baselines


def test_set_overrides_reach_plugins():
    config = load_config(
        PIPELINES[0].parent / "quickstart.yaml",
        ["distill.ipc=3", "distill.methods.dm.iterations=7", "space.channels=4"],
    )
    assert config.distill.ipc == 3
    assert config.distill.methods["dm"].iterations == 7
    assert config.space.channels == 4


@pytest.mark.parametrize(
    "override, message",
    [
        ("distill.ipcc=3", "unknown key 'distill.ipcc'"),
        ("distill.ipc=ten", "distill.ipc: expected an integer"),
        ("distill.ipc=0", "distill: ipc must be an integer >= 1, got 0"),
        ("distill.methods.magic={}", "unknown distiller 'magic'; choose one of:"),
        ("data.name=mnist", "data.name: unknown dataset 'mnist'"),
        ("space.name=darts", "unknown search space 'darts'"),
        ("proxy.lr=-1", "proxy: lr must be > 0"),
        ("report.top_k=50", "report.top_k=50 exceeds sample.num_archs=20"),
        ("proxy.arch_batch=0", "proxy: arch_batch must be an integer >= 1 or auto, got 0"),
        (
            "proxy.arch_batch=auto|run.storage=sqlite:////tmp/proxynas-never-opened.db",
            "proxy.arch_batch=auto cannot be shared by the processes of run.storage (each device would choose its"
            " own); set proxy.arch_batch to a number",
        ),
        ("distill.methods.dm.preset=nope", "distill.methods.dm.preset: dm has no preset 'nope' (presets: "),
        (
            "space={name: convnet720}|proxy.arch_batch=4",
            "proxy.arch_batch=4 trains architectures fused, which the convnet720 space does not support;"
            " set proxy.arch_batch: 1 or proxy.batching: side_by_side",
        ),
        ("proxy.batching=stacked", "proxy: unknown batching 'stacked'; choose one of: fused, side_by_side"),
    ],
)
def test_bad_settings_give_one_line_errors(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(PIPELINES[0].parent / "quickstart.yaml", override.split("|"))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML: line 2, column 1: .*fix the file there"):
        load_config(bad)


def test_a_pipeline_file_that_is_not_a_mapping_of_sections(tmp_path):
    for text, got in (("- run\n- data\n", "got a list"), ("hello\n", "got str 'hello'")):
        path = tmp_path / "p.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=f"the top level of a pipeline file must be a mapping.*{got}"):
            load_config(path)
    empty_run = tmp_path / "empty_run.yaml"
    empty_run.write_text("run:\n")  # an empty section is its defaults
    assert load_config(empty_run).run.name == "empty_run"


def test_exponent_numbers_in_a_pipeline_file_are_floats(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("proxy: {name: train, lr: 1e-3}\nsample: {fraction: 5e-2}\nreference: {name: train}\n")
    config = load_config(path, ["reference.lr=2e-2"])
    assert (config.proxy.lr, config.sample.fraction, config.reference.lr) == (1e-3, 5e-2, 2e-2)


def test_a_missing_sample_table_is_blamed_on_sample_table(tmp_path):
    quickstart = PIPELINES[0].parent / "quickstart.yaml"
    with pytest.raises(ConfigError, match=r"^sample: table .*nope.csv .* not found; point sample.table at"):
        load_config(quickstart, ["sample.strategy=top", f"sample.table={tmp_path / 'nope.csv'}"])
    # only a strategy that reads the table needs it
    assert load_config(quickstart, [f"sample.table={tmp_path / 'nope.csv'}"]).sample.strategy == "uniform"


@pytest.mark.parametrize("override, message", [
    ("run.ledger=ledger.db", "run: ledger 'ledger.db' is not a database URL; use sqlite:///path.db"),
    ("run.storage=bogus://x", "run: storage 'bogus://x' names an unknown database 'bogus'"),
    ("run.storage=postgres://u:pw@h/db", "'postgres://u:***@h/db' names an unknown database 'postgres';"
                                         " write postgresql://"),
])
def test_database_urls_are_checked_at_load(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(PIPELINES[0].parent / "quickstart.yaml", [override])
    assert message in str(err.value)


def test_check_storage_url(tmp_path):
    from proxynas.config.pipeline import check_storage_url

    ok = f"sqlite:///{tmp_path / 'new' / 'deeper' / 'study.db'}"
    assert check_storage_url(ok, "--storage") == ok
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert check_storage_url("postgresql://user@host/db", "--storage")  # no connection is made
    (tmp_path / "file").write_text("x")
    for url, message in [
        (f"sqlite:///{tmp_path / 'file' / 'study.db'}", "because " + str(tmp_path / "file") + " is a file"),
        (f"sqlite:///{tmp_path}", "is a folder; name a database file in it"),
        ("mysql://u@h/db", "needs the Python module 'MySQLdb', which is not installed; pip install 'mysqlclient'"),
        ("nope", "--storage 'nope' is not a database URL"),
    ]:
        with pytest.raises(ConfigError, match="^--storage ") as err:
            check_storage_url(url, "--storage")
        assert message in str(err.value)


def test_default_proxy_trains_with_dsa_on_val_and_the_reference_scores_on_test():
    from proxynas.proxies import TrainProxy

    config = PipelineConfig()
    assert config.proxy.augment == "dsa" and config.proxy.eval_split == "val"
    assert config.reference.eval_split == "test" and config.reference.augment == "none"
    assert TrainProxy().eval_split == "val"  # a proxy section that says nothing scores on val


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_pipelines_score_proxies_on_val_train_with_dsa_and_a_trained_reference_on_test(path):
    from proxynas.proxies import TrainProxy

    config = load_config(path)
    if isinstance(config.reference, TrainProxy):
        assert config.reference.eval_split == "test"
        assert "eval_split: test" in path.read_text()  # stated in the file, not left to a default
    assert config.proxy.eval_split == "val" and config.proxy.augment == "dsa"
    for baseline in config.baselines.values():
        assert not isinstance(baseline, TrainProxy) or baseline.eval_split == "val"


def test_a_distiller_preset_fills_the_papers_settings_and_explicit_keys_win():
    from proxynas.distill import DM

    preset = DM.presets["cifar10-ipc10"]
    config = load_config(PIPELINES[0].parent / "quickstart.yaml",
                         ["distill.methods={dm: {preset: cifar10-ipc10, width: 64}}"])
    dm = config.distill.methods["dm"]
    assert dm == DM(**{**preset, "width": 64}) and dm == DM.paper("cifar10", 10, width=64)


def test_side_by_side_batching_trains_any_space_at_once():
    config = load_config(PIPELINES[0].parent / "quickstart.yaml",
                         ["space={name: convnet720}", "proxy.arch_batch=4", "proxy.batching=side_by_side"])
    assert config.proxy.archs_per_scoring() == 4 and config.proxy.batching == "side_by_side"
