import pytest

from proxynas.errors import ConfigError
from proxynas.reference import load_table
from proxynas.sampling import stratified_sample
from proxynas.spaces import NB201Space


@pytest.fixture(scope="module")
def reference(nb201_csv):
    return load_table(nb201_csv).column("cifar10_test_200ep")


def test_every_quantile_bin_is_represented(reference):
    space = NB201Space(skip_disconnected=True)
    archs = stratified_sample(space, reference, 20, bins=5, seed=0)
    assert len(set(archs)) == 20
    values = sorted(v for a, v in reference.items() if not _disconnected(space, a))
    cut = values[len(values) * 4 // 5]  # lower edge of the top quintile
    assert sum(reference[a] >= cut for a in archs) == 4
    assert stratified_sample(space, reference, 20, bins=5, seed=0) == archs
    assert stratified_sample(space, reference, 20, bins=5, seed=1) != archs


def _disconnected(space, arch):
    try:
        space.validate(arch)
        return False
    except Exception:
        return True


def test_uniform_sampling_rarely_covers_the_top(reference):
    # why stratified exists: a uniform draw of 20 has on average 2 archs in the top decile
    space = NB201Space()
    top = sorted(reference.values())[int(len(reference) * 0.9)]
    hits = [sum(reference[a] >= top for a in space.sample(20, seed=s)) for s in range(20)]
    assert min(hits) <= 1


def test_only_space_members_are_drawn(reference):
    space = NB201Space(skip_disconnected=True)
    for arch in stratified_sample(space, reference, 50, bins=10, seed=3):
        space.validate(arch)  # raises for a disconnected arch


def test_bad_requests_are_config_errors(reference):
    space = NB201Space()
    with pytest.raises(ConfigError, match="sample.bins"):
        stratified_sample(space, reference, 10, bins=20, seed=0)
    with pytest.raises(ConfigError, match="only 2 archs"):
        stratified_sample(space, dict(list(reference.items())[:2]), 5, bins=1, seed=0)


def test_stratified_config_without_a_table_samples_from_the_packaged_table(reference, tmp_path, monkeypatch):
    from proxynas.config import SampleConfig
    from proxynas.pipeline import sample_archs

    monkeypatch.chdir(tmp_path)  # no ../shared here: only the table inside the package can be read
    sample = SampleConfig(num_archs=10, strategy="stratified", bins=5, seed=2)
    assert sample.table == ""  # stays empty in the config, so cache keys do not depend on the install path
    space = NB201Space(skip_disconnected=True)
    archs = sample_archs({"space": space, "sample": sample})
    assert len(set(archs)) == 10
    assert archs == stratified_sample(space, reference, 10, bins=5, seed=2)


def test_top_sample_draws_only_from_the_best_fraction_of_the_space():
    from proxynas.reference import load_table
    from proxynas.sampling import top_sample

    space = NB201Space(channels=4, cells_per_stage=1, skip_disconnected=True)
    reference = load_table("").column("cifar10_test_200ep")
    in_space = set(space.enumerate())
    members = sorted(v for a, v in reference.items() if a in in_space)
    cut = members[len(members) - round(0.1 * len(members))]
    archs = top_sample(space, reference, 50, fraction=0.1, seed=0)
    assert len(set(archs)) == 50 and all(reference[a] >= cut for a in archs)
    assert top_sample(space, reference, 50, fraction=0.1, seed=0) == archs
    assert top_sample(space, reference, 50, fraction=0.1, seed=1) != archs
    with pytest.raises(ConfigError, match="top 1% of the space holds"):
        top_sample(space, reference, 500, fraction=0.01, seed=0)


def test_the_pipeline_samples_the_top_fraction_by_config():
    from proxynas.config.pipeline import SampleConfig
    from proxynas.pipeline import sample_archs
    from proxynas.reference import load_table

    space = NB201Space(channels=4, cells_per_stage=1, skip_disconnected=True)
    archs = sample_archs({"space": space, "sample": SampleConfig(num_archs=10, strategy="top", fraction=0.05)})
    reference = load_table("").column("cifar10_test_200ep")
    assert len(archs) == 10 and min(reference[a] for a in archs) > 93.0  # NB201's top 5% lies above 93%
    with pytest.raises(ValueError, match="fraction"):
        SampleConfig(strategy="top", fraction=0.0)
