"""build_model: archs, layer groups, input sizes and channels, pretrained weights and errors."""

from __future__ import annotations

import os
import pickle
import socket
from pathlib import Path

import pytest
import torch
from torchvision import models as tvm

from trainers.models import ARCHS, GroupedModel, build_model
from trainers.seeding import seed_everything


@pytest.mark.parametrize("image_size", [8, 16, 33, 64])
def test_simple_cnn_works_from_8_to_64_px(image_size: int) -> None:
    model = build_model("simple_cnn", 5, in_channels=1).eval()
    out = model(torch.randn(2, 1, image_size, image_size))
    assert out.shape == (2, 5)


@pytest.mark.parametrize(("arch", "n_groups"), [("simple_cnn", 3), ("resnet18", 3)])
def test_layer_groups_cover_every_parameter_once_head_last(arch: str, n_groups: int) -> None:
    model = build_model(arch, 4)
    groups = model.layer_groups()
    assert len(groups) == n_groups
    assert groups[-1] is model.head
    ids = [id(p) for g in groups for p in g.parameters()]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())


def test_resnet_groups_are_stem_to_layer2_then_layer3_layer4() -> None:
    model = build_model("resnet18", 3)
    first, second, _ = model.layer_groups()
    assert len(first) == 3 and len(second) == 2
    assert second[1] is model.body[4]  # layer4


@pytest.mark.parametrize("arch", ["resnet18", "resnet34"])
def test_resnet_adapts_first_conv_to_in_channels(arch: str) -> None:
    model = build_model(arch, 7, in_channels=1).eval()
    assert isinstance(model, GroupedModel)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)


def test_resnet_head_is_fastais_create_head() -> None:
    """fastai: BN, Dropout(0.25), Linear(2 nf -> 512, no bias), ReLU, BN, Dropout(0.5),
    Linear(512 -> n, no bias), the linear weights from ``kaiming_normal_`` (std sqrt(2/fan_in))."""
    seed_everything(0)
    head = build_model("resnet18", 4).head
    kinds = [type(m).__name__ for m in head]
    assert kinds == [
        "AdaptiveConcatPool2d", "Flatten", "BatchNorm1d", "Dropout", "Linear", "ReLU",
        "BatchNorm1d", "Dropout", "Linear",
    ]  # fmt: skip
    hidden, last = head[4], head[8]
    assert (hidden.in_features, hidden.out_features, last.out_features) == (1024, 512, 4)
    assert hidden.bias is None and last.bias is None
    assert (head[3].p, head[7].p) == (0.25, 0.5)
    assert hidden.weight.std().item() == pytest.approx((2 / 1024) ** 0.5, rel=0.05)


def test_create_head_checks_hidden_and_can_keep_torchs_init() -> None:
    from trainers.models import create_head

    with pytest.raises(ValueError, match="hidden must be an integer >= 1 or None, but got 0"):
        create_head(8, 2, hidden=0)
    torch.manual_seed(0)
    plain = create_head(8, 2, hidden=None, bias=True, init=None)[-1]
    torch.manual_seed(0)
    assert torch.equal(plain.weight, torch.nn.Linear(16, 2).weight)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_pretrained_file_with_a_non_finite_weight_is_refused_naming_it(
    tmp_path: Path, bad: float
) -> None:
    weights = build_model("simple_cnn", 10, in_channels=1).state_dict()
    weights["body.1.0.weight"][0, 0, 0, 0] = bad
    torch.save(weights, tmp_path / "diverged.pt")
    with pytest.raises(ValueError, match=r"diverged\.pt'.*tensor 'body\.1\.0\.weight' holds NaN"):
        build_model("simple_cnn", 10, in_channels=1, pretrained=tmp_path / "diverged.pt")


def test_unknown_arch_lists_the_archs() -> None:
    with pytest.raises(
        ValueError, match=r"arch must be one of \['simple_cnn', 'resnet18', 'resnet34'\]"
    ):
        build_model("vgg16", 10)
    assert ARCHS == ("simple_cnn", "resnet18", "resnet34")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_classes": 0}, "n_classes must be an integer >= 1"),
        ({"n_classes": 3, "in_channels": 0}, "in_channels must be"),
    ],
)
def test_bad_sizes_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_model("simple_cnn", **kwargs)


def test_pretrained_file_with_same_classes_loads_everything(tmp_path: Path) -> None:
    seed_everything(0)
    source = build_model("simple_cnn", 3)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    seed_everything(1)
    loaded = build_model("simple_cnn", 3, pretrained=tmp_path / "w.pt")
    for (name, a), b in zip(source.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_pretrained_file_with_other_classes_keeps_the_body_and_a_fresh_head(tmp_path: Path) -> None:
    source = build_model("simple_cnn", 3)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    loaded = build_model("simple_cnn", 10, pretrained=str(tmp_path / "w.pt"))
    assert torch.equal(loaded.body[0][0].weight, source.body[0][0].weight)
    assert loaded.head[-1].out_features == 10


def test_pretrained_torchvision_format_file_fills_the_resnet_body(tmp_path: Path) -> None:
    tv = tvm.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    model = build_model("resnet18", 2, pretrained=tmp_path / "tv.pth")
    assert torch.equal(model.body[0][0].weight, tv.conv1.weight)
    assert torch.equal(model.body[4][1].bn2.running_var, tv.layer4[1].bn2.running_var)


class Exploit:
    """Unpickling this would call os.system: torch.load(weights_only=True) must refuse."""

    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_pretrained_pickle_that_runs_code_is_refused_naming_the_file(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "evil.pt"
    bad.write_bytes(pickle.dumps({"body.0.0.weight": Exploit()}, protocol=2))
    with pytest.raises(ValueError, match=r"pretrained file '.*evil\.pt' .*weights_only=True"):
        build_model("simple_cnn", 3, pretrained=bad)
    assert not (tmp_path / "pwned.txt").exists()


def test_pretrained_file_that_does_not_fit_names_the_file(tmp_path: Path) -> None:
    torch.save(build_model("simple_cnn", 3, in_channels=3).state_dict(), tmp_path / "rgb.pt")
    with pytest.raises(
        ValueError, match=r"pretrained file '.*rgb\.pt' does not fit the simple_cnn body"
    ):
        build_model("simple_cnn", 3, in_channels=1, pretrained=tmp_path / "rgb.pt")


@pytest.mark.parametrize(
    ("arch", "pretrained", "error", "match"),
    [
        (
            "simple_cnn",
            "missing/w.pt",
            FileNotFoundError,
            r"pretrained weights file 'missing/w\.pt' does not exist",
        ),
        (
            "resnet18",
            "IMAGENET9K_V9",
            ValueError,
            r"weights names are \['IMAGENET1K_V1', 'DEFAULT'\]",
        ),
        ("simple_cnn", "IMAGENET1K_V1", ValueError, "simple_cnn has no torchvision weights"),
        (
            "simple_cnn",
            3,
            ValueError,
            "pretrained must be None, a file path or a torchvision weights name",
        ),
    ],
)
def test_bad_pretrained_values_are_explained(
    arch: str, pretrained, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        build_model(arch, 3, pretrained=pretrained)


def test_torchvision_weights_offline_raise_a_clear_runtime_error(
    tmp_path: Path, monkeypatch
) -> None:
    try:
        socket.getaddrinfo("download.pytorch.org", 443)
    except OSError:
        pass  # offline, as the test machines are
    else:
        pytest.skip("a network is reachable here; the offline error cannot be provoked")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached weights
    with pytest.raises(
        RuntimeError, match=r"Could not download torchvision weights .* pass pretrained= a local"
    ):
        build_model("resnet18", 3, pretrained="IMAGENET1K_V1")


def test_pretrained_rgb_filters_are_averaged_for_one_channel(tmp_path: Path) -> None:
    tv = tvm.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    model = build_model("resnet18", 2, in_channels=1, pretrained=tmp_path / "tv.pth")
    expected = tv.conv1.weight.mean(dim=1, keepdim=True) * 3
    assert torch.allclose(model.body[0][0].weight, expected)
