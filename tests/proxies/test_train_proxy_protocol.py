"""The training proxy's protocol: validation not test, the evaluation subset, learning-curve scores, a learned lr."""

import dataclasses
import math

import pytest
import torch

from proxynas.config.typed import from_dict
from proxynas.data.types import DatasetSplits, ImageData
from proxynas.errors import ConfigError
from proxynas.proxies import ProxyContext, TrainProxy
from proxynas.proxies.training import stratified_subset
from tests.proxies.tiny import ARCH, SPACE, separable_data

CPU = torch.device("cpu")


class NoTestSplit(DatasetSplits):
    """Splits whose test split must never be read: reading ``.test`` fails the test."""

    def __getattribute__(self, name):
        if name == "test":
            raise AssertionError("the proxy read the test split")
        return super().__getattribute__(name)


def _no_test(data: DatasetSplits) -> NoTestSplit:
    # NaN test images too, in case something copies the splits without the attribute
    poisoned = ImageData(torch.full_like(data.test.x, math.nan), data.test.y, data.classes,
                         data.train.mean, data.train.std)
    return NoTestSplit(data.name, data.train, data.val, poisoned, dict(data.info))


def _ctx(data: DatasetSplits, **kwargs) -> ProxyContext:
    return ProxyContext(space=SPACE, dataset=data, train_data=data.train, device=CPU, seed=0, **kwargs)


@pytest.fixture(scope="module")
def data() -> DatasetSplits:
    return separable_data(classes=3, per_class=12)


def test_a_proxy_with_defaults_never_reads_the_test_split(data):
    ctx = _ctx(_no_test(data))
    value = TrainProxy(epochs=2, batch_size=8).score(ARCH, ctx)
    assert math.isfinite(value) and 0.0 <= value <= 100.0
    # the wrapper does catch a reader: the reference's setting reads test
    with pytest.raises(AssertionError, match="read the test split"):
        TrainProxy(epochs=1, batch_size=8, eval_split="test").score(ARCH, ctx)


def test_eval_split_picks_the_split_scored(data):
    # a val split whose labels are all wrong scores 0 %, the test split with the right labels does not
    wrong = ImageData(data.val.x, (data.val.y + 1) % 3, data.classes, data.val.mean, data.val.std)
    swapped = DatasetSplits(data.name, data.train, wrong, data.test)
    ctx = _ctx(swapped)
    trained = TrainProxy(epochs=30, batch_size=8, lr=0.05, scores=("val_acc",))
    on_val, on_test = trained.score(ARCH, ctx), dataclasses.replace(trained, eval_split="test").score(ARCH, ctx)
    assert on_test > 80.0 and on_val < 20.0


def test_eval_size_draws_a_class_stratified_subset_of_that_size_fixed_by_the_seed():
    y = torch.tensor([0] * 30 + [1] * 20 + [2] * 10)
    split = ImageData(torch.arange(60.0).view(60, 1, 1, 1), y, ("a", "b", "c"), (0.0,), (1.0,))
    sub = stratified_subset(split, 12, seed=3)
    assert len(sub) == 12
    assert torch.bincount(sub.y, minlength=3).tolist() == [6, 4, 2]  # 30:20:10
    picked = sub.x.flatten()
    assert torch.equal(picked, stratified_subset(split, 12, seed=3).x.flatten())  # same seed, same images
    assert not torch.equal(picked, stratified_subset(split, 12, seed=4).x.flatten())
    assert torch.equal(split.y[picked.long()], sub.y)  # images keep their labels
    # uneven shares: every class keeps at least one image and the size is exact
    for size in (3, 4, 7, 59):
        counts = torch.bincount(stratified_subset(split, size, seed=0).y, minlength=3)
        assert int(counts.sum()) == size and bool((counts >= 1).all())
    assert len(stratified_subset(split, 100, seed=0)) == 60  # more than the split: all of it
    with pytest.raises(ValueError, match="cannot hold the 3 classes"):
        stratified_subset(split, 2, seed=0)


def test_the_proxy_scores_on_the_eval_size_subset(data):
    proxy = TrainProxy(epochs=2, batch_size=8, eval_size=7, scores=("val_acc",))
    value = proxy.score(ARCH, _ctx(data))
    assert value * 7 / 100 == pytest.approx(round(value * 7 / 100))  # a count out of 7 images
    with pytest.raises(ConfigError, match=r"proxy\.eval_size=2: .*3 classes; raise it"):
        dataclasses.replace(proxy, eval_size=2).score(ARCH, _ctx(data))


def test_sotl_is_minus_the_hand_sum_of_the_recorded_epoch_losses(data, monkeypatch):
    from proxynas import training

    losses = []
    real = torch.nn.functional.cross_entropy

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        if torch.is_grad_enabled():
            losses.append(float(out.detach()))
        return out

    monkeypatch.setattr(training.F, "cross_entropy", recording)
    proxy = TrainProxy(epochs=5, batch_size=8, lr=0.05, scores=("sotl_3", "val_acc", "sotl_1"))
    scored = proxy.score_values(ARCH, _ctx(data))
    steps = math.ceil(len(data.train) / 8)
    assert len(losses) == 5 * steps
    means = [sum(losses[e * steps : (e + 1) * steps]) / steps for e in range(5)]
    assert list(scored.values) == ["sotl_3", "val_acc", "sotl_1"]
    assert scored.values["sotl_3"] == pytest.approx(-(means[2] + means[3] + means[4]), rel=1e-5)
    assert scored.values["sotl_1"] == pytest.approx(-means[4], rel=1e-5)
    assert [p["train_loss"] for p in scored.curve] == pytest.approx(means, rel=1e-5)
    assert proxy.score(ARCH, _ctx(data)) == scored.values["sotl_3"]  # the first name is the value


def test_val_acc_at_half_the_budget_is_the_curve_point_there(data):
    proxy = TrainProxy(epochs=6, batch_size=8, lr=0.05, curve_every=3,
                       scores=("val_acc", "val_acc@50%", "val_loss"))
    scored = proxy.score_values(ARCH, _ctx(data))
    curve = scored.curve
    assert [p["epoch"] for p in curve] == [1, 2, 3, 4, 5, 6]
    assert [p["val_acc"] is not None for p in curve] == [False, False, True, False, False, True]
    assert scored.values["val_acc@50%"] == curve[2]["val_acc"]
    assert scored.values["val_acc"] == curve[5]["val_acc"]
    assert scored.values["val_loss"] == -curve[5]["val_loss"] < 0


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"scores": ["val_acc@25%"], "epochs": 8}, "reads the validation curve at epoch 2 but curve_every=0"),
        ({"scores": ["val_acc@50%"], "epochs": 8, "curve_every": 3}, "set curve_every to a divisor of 4"),
        ({"scores": ["val_acc@30%"], "epochs": 8, "curve_every": 1}, "needs a whole epoch at 30% of 8 epochs"),
        ({"scores": ["sotl_9"], "epochs": 8}, "sums the last 9 epochs but training runs 8"),
        ({"scores": ["sotl_0"]}, "unknown score 'sotl_0'"),
        ({"scores": ["val_acc@101%"]}, "unknown score 'val_acc@101%'"),
        ({"scores": ["acc"]}, "choose from: val_acc, val_loss, sotl_<E>"),
        ({"scores": []}, "at least one score"),
        ({"scores": ["val_acc", "val_acc"]}, "lists 'val_acc' twice"),
        ({"eval_split": "train"}, "choose one of: val, test"),
        ({"eval_size": 0}, "eval_size must be an integer >= 1 or null"),
        ({"steps": 0}, "steps must be an integer >= 1 or null"),
        ({"curve_every": -1}, "curve_every must be an integer >= 0"),
    ],
)
def test_bad_settings_fail_at_load_in_one_line(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        from_dict(TrainProxy, settings, "proxy")
    assert "\n" not in str(err.value) and str(err.value).startswith("proxy")


def test_good_curve_settings_load():
    proxy = from_dict(TrainProxy, {"epochs": 8, "curve_every": 2, "scores": ["sotl_8", "val_acc@25%", "val_acc@100%"]})
    assert proxy.value_names() == ("sotl_8", "val_acc@25%", "val_acc@100%")
    # with a budget in steps the epochs depend on the data, so the same checks wait for scoring
    assert from_dict(TrainProxy, {"steps": 4, "scores": ["sotl_50"]}).steps == 4


def test_a_step_budget_checks_the_curve_scores_when_it_knows_the_epochs(data):
    proxy = TrainProxy(steps=10, batch_size=8, scores=("sotl_4",))  # 36 images: 5 steps a pass, 2 epochs
    with pytest.raises(ConfigError, match=r"^proxy\.scores: sotl_4 sums the last 4 epochs but training runs 2"):
        proxy.score(ARCH, _ctx(data))
    scored = dataclasses.replace(proxy, scores=("sotl_2",)).score_values(ARCH, _ctx(data))
    assert [p["steps"] for p in scored.curve] == [5, 10]


def test_a_learned_lr_in_the_context_trains_like_that_explicit_lr(data):
    learned = _ctx(data, learned_lr=0.123)
    asked = TrainProxy(epochs=2, batch_size=8, lr=0.05, lr_from_summary=True, scores=("val_acc", "sotl_2"))
    explicit = dataclasses.replace(asked, lr=0.123, lr_from_summary=False)
    ignored = dataclasses.replace(asked, lr_from_summary=False)
    with_learned = asked.score_values(ARCH, learned)
    assert with_learned == explicit.score_values(ARCH, _ctx(data))  # bit for bit, curve included
    assert with_learned != ignored.score_values(ARCH, learned)  # lr 0.05 trains differently
    assert asked.score_values(ARCH, _ctx(data)) == ignored.score_values(ARCH, _ctx(data))  # none learned: lr

