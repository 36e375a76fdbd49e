"""Review findings: weights files that do not load, first-conv init, plots, seeding."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torchvision import models as tvm

from trainers.lr_finder import LRFindResult
from trainers.models import build_model
from trainers.plots import plot_confusion_matrix, plot_curves, plot_lr_find
from trainers.seeding import seed_everything


@pytest.fixture
def simple_cnn_file(tmp_path: Path) -> Path:
    seed_everything(0)
    path = tmp_path / "sc.pt"
    torch.save(build_model("simple_cnn", 3).state_dict(), path)
    return path


@pytest.mark.parametrize("damage", ["truncated", "cut-early", "text", "zeros", "empty"])
def test_unreadable_weights_file_is_a_value_error_naming_the_file(
    simple_cnn_file: Path, damage: str
) -> None:
    """A file cut early made torch raise ``OSError: [Errno 22] Invalid argument``, passed on
    as is; zeros were called a file that "may run code", with torch's advice to load it with
    weights_only=False."""
    data = simple_cnn_file.read_bytes()
    bad = simple_cnn_file.with_name(f"{damage}.pt")
    damaged = {
        "truncated": data[: len(data) // 2],
        "cut-early": data[: len(data) // 10],  # torch: OSError, EINVAL
        "text": b"hello",
        "zeros": b"\0" * 100,
        "empty": b"",
    }
    bad.write_bytes(damaged[damage])
    with pytest.raises(
        ValueError, match=rf"pretrained file '.*{damage}\.pt' could not be read as a torch file"
    ) as caught:
        build_model("simple_cnn", 3, pretrained=bad)
    assert "weights_only set to False" not in str(caught.value)


def test_a_pickled_model_is_refused_saying_how_to_save_its_weights(tmp_path: Path) -> None:
    """torch's message (its advice to unpickle the file unsafely, terminal escape codes) was
    passed on; the fix, saving the state dict alone, was not said."""
    path = tmp_path / "whole.pt"
    torch.save(tvm.resnet18(weights=None), path)
    with pytest.raises(ValueError) as caught:
        build_model("resnet18", 3, pretrained=path)
    message = str(caught.value)
    assert "holds Python objects (torchvision.models.resnet.ResNet), not a plain state dict" in (
        message
    )
    assert "torch.save(model.state_dict(), path)" in message
    assert "\x1b[" not in message and "weights_only set to False" not in message


def test_a_checkpoint_holding_its_state_dict_under_state_dict_loads(tmp_path: Path) -> None:
    """The layout of Lightning's checkpoints and many training loops was refused."""
    seed_everything(0)
    weights = tvm.resnet18(weights=None).state_dict()
    path = tmp_path / "lightning.pt"
    torch.save({"state_dict": weights, "epoch": 3}, path)
    model = build_model("resnet18", 3, pretrained=path)
    assert torch.equal(model.body[0][0].weight, weights["conv1.weight"])
    other = tmp_path / "other.pt"
    torch.save({"epoch": 3, "step": 10}, other)
    with pytest.raises(ValueError, match=r"but a mapping of \['epoch', 'step'\]; save the model"):
        build_model("resnet18", 3, pretrained=other)


def test_torchvision_file_of_another_resnet_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tv34.pth"
    torch.save(tvm.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r"pretrained file '.*tv34\.pth' does not fit resnet18"):
        build_model("resnet18", 3, pretrained=path)


def test_torchvision_file_with_other_conv_shapes_names_the_file(tmp_path: Path) -> None:
    tv = tvm.resnet18(weights=None)
    tv.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # a grey-scale torchvision resnet
    path = tmp_path / "grey.pth"
    torch.save(tv.state_dict(), path)
    with pytest.raises(ValueError, match=r"pretrained file '.*grey\.pth' does not fit resnet18"):
        build_model("resnet18", 3, in_channels=1, pretrained=path)


def test_foreign_state_dict_into_a_resnet_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match=r"pretrained file '.*foreign\.pt' does not fit resnet18"):
        build_model("resnet18", 3, pretrained=path)


def test_a_folder_given_as_pretrained_is_called_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"pretrained=.* is a folder, not a weights file"):
        build_model("simple_cnn", 3, pretrained=tmp_path)


@pytest.mark.parametrize("in_channels", [2, 4])
def test_random_resnet_first_conv_gets_its_own_filter_per_channel(in_channels: int) -> None:
    # fastai builds a fresh conv when there are no pretrained weights to adapt
    seed_everything(0)
    conv = build_model("resnet18", 2, in_channels=in_channels).body[0][0]
    w = conv.weight
    assert w.shape[1] == in_channels
    assert not torch.allclose(w[:, 0], w[:, 1])


# ----------------------------------------------------------------- plots


def _record(epoch: int | None, phase: str, loss: float) -> dict:
    if epoch is None:
        return {"epoch": None, "phase": phase, "lrs": [1e-3]}
    return {
        "epoch": epoch,
        "train_loss": loss,
        "valid_loss": loss / 2,
        "error_rate": 0.1,
        "phase": phase,
    }


@pytest.fixture
def drawn(monkeypatch) -> list[Figure]:
    """Every figure saved, kept for inspection."""
    figures: list[Figure] = []
    original = Figure.savefig

    def savefig(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figures


def test_plot_curves_skips_recipe_step_markers(tmp_path: Path, drawn: list[Figure]) -> None:
    history = [
        _record(None, "lr_find_frozen", 0),
        _record(0, "head", 2.0),
        _record(None, "unfreeze", 0),
        _record(None, "lr_find_unfrozen", 0),
        _record(0, "sgdr", 1.0),
        _record(1, "sgdr", 0.5),
    ]
    plot_curves(history, tmp_path / "curves.png")
    loss_ax = drawn[0].axes[0]
    xy = loss_ax.lines[0].get_xydata()
    assert xy[:, 0].tolist() == [1, 2, 3]
    assert xy[:, 1].tolist() == [2.0, 1.0, 0.5]


def test_plot_curves_of_markers_only_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no epoch"):
        plot_curves([_record(None, "unfreeze", 0)], tmp_path / "curves.png")


def _failing_savefig(self, fname, *args, **kwargs):
    Path(fname).write_bytes(b"\x89PNG half")  # half a file, then the disk is full
    raise OSError("No space left on device")


def _lr_result() -> LRFindResult:
    lrs = tuple(np.geomspace(1e-5, 1, 20).tolist())
    losses = tuple(np.linspace(2, 1, 20).tolist())
    return LRFindResult(lrs, losses, losses, {"valley": 1e-3}, False, 20)


@pytest.mark.parametrize("plot", ["curves", "lr_find", "confusion"])
def test_plots_write_the_file_whole_or_not_at_all(tmp_path: Path, monkeypatch, plot: str) -> None:
    out = tmp_path / "figure.png"
    out.write_bytes(b"previous figure")
    monkeypatch.setattr(Figure, "savefig", _failing_savefig)
    with pytest.raises(OSError, match="No space"):
        if plot == "curves":
            plot_curves([_record(0, "a", 1.0)], out)
        elif plot == "lr_find":
            plot_lr_find(_lr_result(), out)
        else:
            plot_confusion_matrix(np.eye(2, dtype=int), ["a", "b"], out)
    assert out.read_bytes() == b"previous figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure.png"]


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_plots_take_the_format_from_the_suffix(tmp_path: Path, suffix: str) -> None:
    out = plot_curves([_record(0, "a", 1.0), _record(1, "a", math.nan)], tmp_path / f"c{suffix}")
    head = out.read_bytes()[:5]
    assert head == {".png": b"\x89PNG\r", ".svg": b"<?xml", ".pdf": b"%PDF-"}[suffix]


# ----------------------------------------------------------------- seeding


def test_seed_too_large_for_torch_is_refused_naming_seed() -> None:
    with pytest.raises(ValueError, match=r"seed must be .* below 2\*\*64"):
        seed_everything(2**64)
    seed_everything(2**64 - 1)  # the largest torch takes
