import pytest
import torch

from proxynas.data.digits import Digits
from proxynas.models import ConvNet
from proxynas.spaces import NB201Space
from proxynas.teacher import CONVNET, Teacher, TeacherConfig, relabelled_row, train_teacher

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return Digits().load()


def test_the_teachers_key_holds_its_training_not_the_students_temperature():
    config = TeacherConfig(relabel=("dm",), temperature=2.0, epochs=3)
    settings = config.network_settings()
    assert "temperature" not in settings and "relabel" not in settings
    assert settings["epochs"] == 3 and settings["arch"] == CONVNET
    assert TeacherConfig(**settings).epochs == 3
    assert relabelled_row("dm") == "dm+teacher"


@pytest.mark.parametrize("bad", [{"relabel": ("dm", "dm")}, {"temperature": 0.0}, {"epochs": 0}, {"width": 0}])
def test_bad_teacher_settings_are_refused(bad):
    with pytest.raises(ValueError):
        TeacherConfig(**bad)


def test_a_convnet_teacher_learns_the_training_split_and_is_handed_over_frozen(digits):
    settings = TeacherConfig(epochs=3, width=16, depth=2, batch_size=64).network_settings()
    out = train_teacher(digits, {"settings": settings, "seed": 0}, CPU)
    teacher = out["teacher"]
    assert isinstance(teacher, Teacher) and isinstance(teacher.model, ConvNet)
    assert teacher.val_acc > 50.0  # ten classes: chance is 10%
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())
    assert out["teacher_seconds"] == teacher.seconds > 0
    again = train_teacher(digits, {"settings": settings, "seed": 0}, CPU)["teacher"]
    x = digits.val.x[:8]
    assert torch.equal(teacher.model(x), again.model(x))  # same seed, same teacher


def test_a_teacher_can_be_a_cell_of_the_space(digits):
    space = NB201Space(channels=4, cells_per_stage=1)
    arch = space.sample(1, seed=0)[0]
    settings = TeacherConfig(epochs=1, arch=arch).network_settings()
    teacher = train_teacher(digits, {"settings": settings, "seed": 0, "space": space}, CPU)["teacher"]
    assert not isinstance(teacher.model, ConvNet)
    assert teacher.model(digits.val.x[:4]).shape == (4, digits.num_classes)
    with pytest.raises(ValueError, match="search space"):
        train_teacher(digits, {"settings": settings, "seed": 0}, CPU)
