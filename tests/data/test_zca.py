"""ZCA whitening (proxynas.data.zca) and the pipeline's ``zca:`` section."""

import io

import pytest
import torch

from proxynas.config import load_config
from proxynas.config.pipeline import TuneConfig, dump_config
from proxynas.data.base import channel_stats, normalize
from proxynas.data.types import DatasetSplits, ImageData
from proxynas.data.zca import RELEASED_SETTINGS, ZCA, ZCAWhitening, displayable, whiten_splits, whitening_of
from proxynas.errors import ConfigError
from proxynas.pipeline import build_graph

from tests.quickstart import QUICKSTART, TINY


def _pixels(n=60, c=2, h=3, w=3, seed=0):
    """Pixels in [0, 1]: a brightness shared by each image's pixels plus independent noise.

    The shared part gives the covariance one eigenvalue near 0.48, the noise
    the others near 0.01, so an ``eps`` of 0.1 whitens the first and shrinks the rest.
    """
    g = torch.Generator().manual_seed(seed)
    shared = torch.rand(n, 1, generator=g, dtype=torch.float64)
    noise = torch.rand(n, c * h * w, generator=g, dtype=torch.float64)
    return (0.6 * shared + 0.4 * noise).reshape(n, c, h, w)


def _data(pixels):
    """``pixels`` as an ImageData normalised with their own channel statistics (as every source does)."""
    mean, std = channel_stats(pixels)
    y = torch.arange(len(pixels)) % 2
    return ImageData(normalize(pixels, mean, std), y, ("a", "b"), mean, std)


def _covariance(flat):
    centred = flat - flat.mean(dim=0)
    return centred.T @ centred / (len(flat) - 1)


@pytest.mark.parametrize(
    "settings",
    [ZCA(), ZCA(eps=0.5, regularization="relative", fit_on="normalized")],
    ids=["absolute-pixels", "relative-normalized"],
)
def test_whitened_training_covariance_is_the_identity_shrunk_by_the_regularisation(settings):
    data = _data(_pixels())
    features = data.x.double() if settings.fit_on == "normalized" else _pixels()
    cov = _covariance(features.flatten(1))
    s, u = torch.linalg.eigh(cov)
    reg = settings.eps if settings.regularization == "absolute" else settings.eps * float(s.sum()) / len(s)
    expected = (u * (s / (s + reg))) @ u.T

    whitened = settings.fit(data).apply(data)
    got = _covariance(whitened.x.double().flatten(1))
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, torch.eye(len(s), dtype=torch.float64), atol=0.1)  # eps does shrink


def test_a_tiny_regularisation_whitens_to_the_identity():
    data = _data(_pixels())
    whitened = ZCA(eps=1e-9).fit(data).apply(data)
    cov = _covariance(whitened.x.double().flatten(1))
    assert torch.allclose(cov, torch.eye(cov.shape[0], dtype=torch.float64), atol=1e-4)


def test_the_default_whitens_as_mtt_does_with_kornia():
    # kornia 0.9.0's ZCAWhitening(eps=0.1, compute_inv=True) fitted on these float64 [0, 1]
    # pixels, as MTT's utils.get_dataset does with --zca (run outside the project)
    data = _data(_pixels())
    z = ZCA().fit(data).apply(data).x
    assert z[0, :, 0, 0].tolist() == pytest.approx([0.42848131873701734, 0.7175831633798164], abs=1e-5)
    assert z[59, :, 2, 2].tolist() == pytest.approx([-0.185658247874191, 0.17658370855689892], abs=1e-5)
    assert z[7, 1].flatten()[:4].tolist() == pytest.approx(
        [-0.3180153374735087, 0.10096972705231397, 0.2523703173167818, 0.15060453493246426], abs=1e-5
    )
    assert float(z.double().abs().sum()) == pytest.approx(339.32342617025495, rel=1e-6)


@pytest.mark.parametrize("name", ["mtt", "frepo", "rfad"])
def test_inverse_undoes_the_whitening(name):
    data = _data(_pixels())
    whitening = ZCA.released(name).fit(data)
    other = _data(_pixels(n=7, seed=1)).x  # images the fit never saw
    for x in (data.x, other):
        z = whitening.whiten(x)
        assert not torch.allclose(z, x, atol=0.1)
        assert torch.allclose(whitening.unwhiten(z), x, atol=1e-5)
    back = whitening.inverse(whitening.apply(data))
    assert torch.allclose(back.x, data.x, atol=1e-5) and torch.equal(back.y, data.y)
    assert (back.mean, back.std) == (data.mean, data.std)


def test_layer_norm_forgets_each_images_brightness_and_contrast():
    data = _data(_pixels())
    whitening = ZCA.released("kip").fit(data)
    x = data.x[:5]
    assert torch.allclose(whitening.whiten(3.0 * x - 0.7), whitening.whiten(x), atol=1e-5)
    # so the display rescales every image to the spread of a normalised one
    shown = whitening.for_display(whitening.apply(data.subset(torch.arange(5))))
    rms = shown.x.double().flatten(1).pow(2).mean(dim=1).sqrt()
    assert torch.allclose(rms, torch.ones(5, dtype=torch.float64), atol=1e-5)
    # without layer norm the display is the exact inverse
    plain = ZCA().fit(data)
    assert torch.allclose(plain.for_display(plain.apply(data)).x, data.x, atol=1e-5)


def test_the_same_data_gives_the_same_fit_and_it_pickles():
    data = _data(_pixels())
    first, second = ZCA().fit(data), ZCA().fit(data)
    for field in ("center", "whitening", "colouring"):
        assert torch.equal(getattr(first, field), getattr(second, field))
    buffer = io.BytesIO()
    torch.save(first, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert isinstance(loaded, ZCAWhitening) and loaded.settings == first.settings
    assert torch.equal(loaded.whiten(data.x), first.whiten(data.x))


def test_whitening_refuses_other_images():
    data = _data(_pixels())
    whitening = ZCA().fit(data)
    renormalised = ImageData(data.x, data.y, data.classes, (0.5, 0.5), data.std)
    with pytest.raises(ValueError, match="fitted on images normalised with mean"):
        whitening.apply(renormalised)
    with pytest.raises(ValueError, match=r"for images \[2, 3, 3\]"):
        whitening.whiten(torch.zeros(4, 2, 4, 4))
    with pytest.raises(ValueError, match="at least two training images"):
        ZCA().fit(data.subset(torch.arange(1)))
    constant = ImageData(torch.zeros(4, 2, 3, 3), torch.zeros(4, dtype=torch.int64), ("a",), (0.5, 0.5), (1.0, 1.0))
    with pytest.raises(ValueError, match="no variance"):
        ZCA(regularization="relative").fit(constant)


def test_released_settings_name_each_papers_code():
    assert ZCA.released("mtt") == ZCA()  # the defaults are MTT's
    kip = ZCA.released("kip")
    assert (kip.regularization, kip.fit_on, kip.layer_norm, kip.center) == ("relative", "normalized", True, False)
    assert set(RELEASED_SETTINGS) == {"mtt", "frepo", "kip", "rfad"}
    with pytest.raises(ValueError, match="choose one of: mtt, frepo, kip, rfad"):
        ZCA.released("dc")
    with pytest.raises(ValueError, match="eps must be"):
        ZCA(eps=0.0)


def test_whiten_splits_fits_on_train_and_keeps_the_whitening():
    train = _data(_pixels())
    val = ImageData(_data(_pixels(n=10, seed=2)).x, torch.zeros(10, dtype=torch.int64), train.classes,
                    train.mean, train.std)
    splits = DatasetSplits("toy", train, val, val, {"seed": 0})
    whitened = whiten_splits(splits, ZCA())
    whitening = whitening_of(whitened)
    assert whitening_of(splits) is None and whitened.info["seed"] == 0
    fitted_on_train = ZCA().fit(train)
    assert torch.equal(whitening.whitening, fitted_on_train.whitening)
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(whitened, name).x, fitted_on_train.whiten(getattr(splits, name).x))
    assert displayable(train, splits) is train
    assert torch.allclose(displayable(whitened.val, whitened).x, val.x, atol=1e-5)


# -- the pipeline's zca: section ------------------------------------------------
def test_zca_is_off_by_default_and_keeps_the_load_stage_as_it_was():
    config = load_config(QUICKSTART)
    assert config.zca is None
    stage = build_graph(config).graph.stage("load_data")
    assert stage.params is config.data and stage.version == "1"


def test_the_zca_section_is_validated_and_round_trips(tmp_path):
    assert load_config(QUICKSTART, ["zca={}"]).zca == ZCA()
    config = load_config(QUICKSTART, ["zca.eps=0.01", "zca.regularization=relative"])
    assert config.zca == ZCA(eps=0.01, regularization="relative")
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config
    with pytest.raises(ConfigError, match="zca.regularization: 'huge' is not allowed; choose one of: absolute, relative"):
        load_config(QUICKSTART, ["zca.regularization=huge"])
    with pytest.raises(ConfigError, match="unknown key 'zca.epsilon'"):
        load_config(QUICKSTART, ["zca.epsilon=0.1"])
    with pytest.raises(ValueError, match="'zca.eps' cannot be tuned"):
        TuneConfig(params={"zca.eps": {"low": 0.01, "high": 1.0}})


@pytest.fixture()
def tiny(tmp_path):
    return TINY + [
        f"run.cache_dir={tmp_path / 'cache'}",
        f"run.ledger=sqlite:///{tmp_path / 'ledger.db'}",
        f"run.tracking_uri=sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        "run.name=tiny",
    ]


def test_the_pipeline_whitens_every_split_with_the_training_fit(tiny):
    from proxynas.app import build_runner

    config = load_config(QUICKSTART, tiny + ["zca={}"])
    outputs = build_runner(config).run(targets=["distill_random"])
    dataset, raw = outputs["dataset"], config.data.load()
    whitening = whitening_of(dataset)
    assert isinstance(whitening, ZCAWhitening) and whitening.settings == ZCA()
    fitted = ZCA().fit(raw.train)
    assert torch.equal(whitening.whitening, fitted.whitening)
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(dataset, name).x, fitted.whiten(getattr(raw, name).x))
    # the random coreset holds whitened training images; its grid shows them un-whitened
    summary = outputs["summary_random"].data
    shown = displayable(summary, dataset).x.flatten(1)
    distance = torch.cdist(shown, raw.train.x.flatten(1)).min(dim=1).values
    assert float(distance.max()) < 1e-3
    assert outputs["grid_random"].png.startswith(b"\x89PNG")

    # the fit is cached with the splits; another eps reloads and re-distils
    again = build_runner(load_config(QUICKSTART, tiny + ["zca={}"]))
    assert all(s.cached for s in again.status(targets=["distill_random"]))
    other = build_runner(load_config(QUICKSTART, tiny + ["zca.eps=0.01"]))
    assert {s.name for s in other.status(targets=["distill_random"]) if not s.cached} == {"load_data", "distill_random"}
    plain = build_runner(load_config(QUICKSTART, tiny))
    assert not any(s.cached for s in plain.status(targets=["load_data"]))  # no zca: the unwhitened stage
