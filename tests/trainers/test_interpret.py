"""Interpretation and the figures: confusion matrix, most confused, top losses, curves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from trainers import Callback, Interpretation, Learner, build_model, make_dataloaders
from trainers.data import TensorLoader
from trainers.interpret import confusion_counts
from trainers.plots import plot_curves
from trainers.seeding import seed_everything

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Two shared cores: one intra-op thread avoids oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def interp() -> Interpretation:
    """Five items, three classes; predictions 0,2,2,1,0 against targets 0,1,1,1,2."""
    probs = torch.tensor(
        [[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]]
    )
    targets = torch.tensor([0, 1, 1, 1, 2])
    losses = -probs[torch.arange(5), targets].log()
    return Interpretation(
        probs=probs,
        targets=targets,
        losses=losses,
        classes=["a", "b", "c"],
        images=torch.rand(5, 1, 8, 8),
    )


def test_confusion_matrix_rows_are_actual_classes(interp: Interpretation) -> None:
    expected = np.array([[1, 0, 0], [0, 1, 2], [1, 0, 0]])
    np.testing.assert_array_equal(interp.confusion_matrix(), expected)


@pytest.mark.parametrize(
    ("min_val", "expected"), [(1, [("b", "c", 2), ("c", "a", 1)]), (2, [("b", "c", 2)]), (3, [])]
)
def test_most_confused_lists_actual_predicted_count(
    interp: Interpretation, min_val: int, expected: list
) -> None:
    assert interp.most_confused(min_val) == expected


def test_top_losses_are_the_largest_first(interp: Interpretation) -> None:
    losses, indices = interp.top_losses(2)
    assert indices.tolist() == [4, 1]
    assert losses.tolist() == pytest.approx([-np.log(0.1), -np.log(0.2)], rel=1e-6)
    assert len(interp.top_losses()[0]) == 5


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda i: i.top_losses(0), r"k must be an integer in \[1, 5\]"),
        (lambda i: i.top_losses(6), r"k must be an integer in \[1, 5\]"),
        (lambda i: i.most_confused(0), "min_val must be an integer >= 1"),
    ],
)
def test_bad_arguments_are_explained(interp: Interpretation, call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(interp)


def _parts(**changes: object) -> dict[str, object]:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    parts: dict[str, object] = {
        "probs": probs,
        "targets": torch.tensor([0, 1, 2]),
        "losses": torch.ones(3),
        "classes": ["a", "b", "c"],
        "images": torch.rand(3, 1, 4, 4),
    }
    return {**parts, **changes}


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        # a 4th output column would put "predicted 3" into another class's cell
        (
            {"probs": torch.tensor([[0.1, 0.1, 0.1, 0.7], [0.8, 0.1, 0.05, 0.05], [0.1] * 4])},
            r"classes has 3 names but probs has 4 columns",
        ),
        ({"probs": torch.rand(3)}, r"probs must be \(N, n_classes\), but got shape \(3,\)"),
        ({"targets": torch.tensor([0, 1])}, r"targets must be \(3,\).*got shape \(2,\)"),
        ({"targets": torch.tensor([0, 1, 3])}, r"targets must be class indices in \[0, 3\)"),
        ({"losses": torch.ones(4)}, r"losses must be \(3,\).*got shape \(4,\)"),
        ({"images": torch.rand(2, 1, 4, 4)}, r"images must be \(3, C, H, W\)"),
    ],
)
def test_inconsistent_parts_are_refused_naming_the_argument(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Interpretation(**_parts(**changes))  # type: ignore[arg-type]


def test_from_learner_refuses_a_model_with_more_outputs_than_classes() -> None:
    dls = make_dataloaders("shapes", image_size=16, batch_size=32)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))  # Learner cannot see its width
    learn = Learner(model, dls, seed=0, device="cpu", progress=False)
    with pytest.raises(ValueError, match=r"classes has 3 names but probs has 4 columns"):
        Interpretation.from_learner(learn)


def test_from_learner_takes_data_of_ones_own_showing_the_valid_loaders_images() -> None:
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(20, 1, 8, 8, generator=gen), torch.arange(20) % 2
    dls = SimpleNamespace(
        train=TensorLoader(images, labels, batch_size=5, shuffle=True, seed=0),
        valid=TensorLoader(images[:7], labels[:7], batch_size=3),
    )
    learn = Learner(build_model("simple_cnn", 2, in_channels=1), dls, device="cpu", progress=False)
    interp = Interpretation.from_learner(learn)
    assert interp.classes == ["0", "1"] and interp.images.shape == (7, 1, 8, 8)
    low, high = images[:7].amin(dim=(1, 2, 3)), images[:7].amax(dim=(1, 2, 3))
    expected = (images[:7] - low.view(-1, 1, 1, 1)) / (high - low).view(-1, 1, 1, 1)
    assert torch.allclose(interp.images, expected, atol=1e-6)  # item i is the valid loader's i
    assert torch.equal(interp.targets, labels[:7])


def test_plots_are_written_as_png(interp: Interpretation, tmp_path: Path) -> None:
    cm = interp.plot_confusion_matrix(tmp_path / "cm.png")
    top = interp.plot_top_losses(3, tmp_path / "top.png")
    assert cm.read_bytes().startswith(PNG) and top.read_bytes().startswith(PNG)


def test_a_figure_goes_into_a_new_folder_and_a_path_that_is_a_folder_is_named(
    interp: Interpretation, tmp_path: Path
) -> None:
    """The folder is created, as ``Learner.save`` creates its own; an error about the path
    named the temporary file (``.cm.png.<pid>.partial``), not the path given."""
    cm = interp.plot_confusion_matrix(tmp_path / "new" / "deeper" / "cm.png")
    assert cm.read_bytes().startswith(PNG)
    with pytest.raises(IsADirectoryError, match=rf"'{tmp_path}' is a folder; give a file name"):
        interp.plot_top_losses(3, tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError) as caught:  # a folder where a file stands cannot be made
        interp.plot_confusion_matrix(blocker / "cm.png")
    assert caught.value.filename in (str(blocker), str(blocker / "cm.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "new"]


def test_confusion_matrix_counts_each_cell_up_to_30_classes_then_shows_colour_only(
    tmp_path: Path,
) -> None:
    """Beyond 30 classes the cells carry no numbers and the figure stops growing: 100 classes
    took 8 s a figure, each trial of a sweep draws one, and the counts are readable nowhere."""
    from PIL import Image

    from trainers.plots import save_figure
    from trainers.plots._interpret import MAX_CELL_COUNTS, _CellCounts, _confusion_figure

    def figure(n: int) -> tuple[list[str], tuple[int, int]]:
        """The cell numbers and the PNG's size of one figure (drawn once, as
        ``plot_confusion_matrix`` draws it)."""
        fig = _confusion_figure(np.arange(n * n).reshape(n, n), [f"class_{i}" for i in range(n)])
        path = save_figure(fig, tmp_path / f"{n}.png")
        ax = fig.axes[0]
        counts = [x for c in ax.collections if isinstance(c, _CellCounts) for x in c.labels]
        return [t.get_text() for t in ax.texts] + counts, Image.open(path).size

    texts, size_at_max = figure(MAX_CELL_COUNTS)
    assert len(texts) == MAX_CELL_COUNTS**2 and texts[1] == "1"
    texts, size = figure(MAX_CELL_COUNTS + 1)
    assert texts == [] and size[0] <= size_at_max[0] + 20
    texts, size = figure(100)
    assert texts == [] and size[0] <= size_at_max[0] + 20


def test_confusion_matrix_draws_each_count_in_its_cell_white_on_dark_cells(tmp_path: Path) -> None:
    """The counts are one collection of glyph outlines: each sits at its own cell's centre,
    at the text size, in white where the cell is dark, whatever dpi the figure is saved at."""
    from matplotlib.colors import to_rgba
    from PIL import Image

    from trainers.plots import save_figure
    from trainers.plots._interpret import _CellCounts, _confusion_figure

    cm = np.array([[0, 9], [3, 0]])
    fig = _confusion_figure(cm, ["a", "b"])
    (counts,) = [c for c in fig.axes[0].collections if isinstance(c, _CellCounts)]
    assert counts.labels == ["0", "9", "3", "0"]
    assert counts.get_offsets().tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]
    white, black = to_rgba("white"), to_rgba("black")
    assert [tuple(c) for c in counts.get_facecolors()] == [black, white, black, black]
    for dpi in (50, 200):
        image = np.asarray(Image.open(save_figure(fig, tmp_path / f"{dpi}.png", dpi=dpi)))
        image = image[..., :3].astype(int)
        fig.set_dpi(dpi)  # transData to this save's pixels
        for (row, col), count in np.ndenumerate(cm):
            x, y = fig.axes[0].transData.transform((col, row))
            r = round(0.1 * dpi)  # a tenth of an inch around the centre: a 10 pt digit's size
            top, left = round(image.shape[0] - y) - r, round(x) - r
            cell = image[top : top + 2 * r, left : left + 2 * r]
            ink = cell - image[top - r, left - r]  # the cell's own colour, well off its centre
            drawn = np.abs(ink).max(axis=2) > 60
            assert 0.05 < drawn.mean() < 0.4, (dpi, row, col, drawn.mean())  # a digit, full size
            lighter = ink[drawn].mean() > 0
            assert lighter == (count > cm.max() / 2), (dpi, row, col)
        fig.set_dpi(100)


def test_interpretation_from_a_trained_learner_matches_validate(tmp_path: Path) -> None:
    dls = make_dataloaders("shapes", image_size=16, batch_size=32)
    seed_everything(0)
    learn = Learner(build_model("simple_cnn", 3), dls, seed=0, device="cpu", progress=False)
    learn.fit_one_cycle(2, 1e-2)
    interp = Interpretation.from_learner(learn)
    cm = interp.confusion_matrix()
    assert cm.sum() == 60
    scores = learn.validate()
    assert np.trace(cm) / 60 == pytest.approx(scores["accuracy"])
    assert 1 - np.trace(cm) / 60 == pytest.approx(scores["error_rate"])
    assert interp.classes == dls.classes
    assert 0.0 <= interp.images.min() and interp.images.max() <= 1.0
    assert interp.plot_top_losses(4, tmp_path / "top.png").read_bytes().startswith(PNG)
    curves = plot_curves(learn.history, tmp_path / "curves.png")
    assert curves.read_bytes().startswith(PNG)


def test_from_learner_is_per_item_in_eval_mode_and_aligned_with_the_images() -> None:
    dls = make_dataloaders("shapes", image_size=16, batch_size=32)
    seed_everything(0)
    learn = Learner(build_model("simple_cnn", 3), dls, seed=0, device="cpu", progress=False)
    learn.fit_one_cycle(1, 1e-2)
    learn.model.train()  # dropout and BatchNorm batch statistics on: must not leak in
    interp = Interpretation.from_learner(learn)
    learn.model.train()
    again = Interpretation.from_learner(learn)
    torch.testing.assert_close(interp.losses, again.losses)
    assert interp.losses.shape == (60,)
    assert interp.losses.mean().item() == pytest.approx(learn.validate()["valid_loss"], rel=1e-5)
    expected = -interp.probs[torch.arange(60), interp.targets].log()
    torch.testing.assert_close(interp.losses, expected, rtol=1e-4, atol=1e-5)
    # the display images, normalised again, are the very items behind probs and targets
    mean, std = dls.mean.view(1, -1, 1, 1), dls.std.view(1, -1, 1, 1)
    torch.testing.assert_close(
        learn.predict((interp.images - mean) / std), interp.probs, rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(interp.targets, dls.valid_labels)


def test_plot_curves_refuses_an_empty_history(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="history is empty"):
        plot_curves([], tmp_path / "c.png")


# ------------------------------------------------------------------------------ review


def _modes(model: torch.nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


@pytest.mark.parametrize(
    "call",
    [
        lambda learn: learn.tta(n=2),
        lambda learn: learn.get_preds(),
        lambda learn: learn.predict(learn.dls.valid_images[:2]),
        Interpretation.from_learner,
        lambda learn: learn.validate(),
    ],
    ids=["tta", "get_preds", "predict", "from_learner", "validate"],
)
def test_inference_restores_every_module_mode(call) -> None:
    # a callback may call these mid-fit: the rest of the epoch must still train with dropout and
    # BatchNorm batch statistics, and a frozen body kept in eval mode must stay so
    dls = make_dataloaders("shapes", image_size=8, batch_size=16, n_per_class=8, augment="light")
    seed_everything(0)
    learn = Learner(build_model("simple_cnn", 3), dls, seed=0, device="cpu", progress=False)
    learn.model.train()
    learn.model.body.eval()  # type: ignore[union-attr]
    before = _modes(learn.model)
    assert any(before) and not all(before)
    call(learn)
    assert _modes(learn.model) == before


def test_top_losses_break_ties_by_item_order_with_nan_first() -> None:
    losses = torch.tensor([1.0, 2.0, 2.0, 2.0, 0.5, 2.0, float("nan"), 2.0])
    n = len(losses)
    interp = Interpretation(
        probs=torch.full((n, 2), 0.5),
        targets=torch.zeros(n, dtype=torch.long),
        losses=losses,
        classes=["a", "b"],
        images=torch.zeros(n, 1, 2, 2),
    )
    values, indices = interp.top_losses()
    assert indices.tolist() == [6, 1, 2, 3, 5, 7, 0, 4]
    assert interp.top_losses(3)[1].tolist() == [6, 1, 2]
    assert values[1:].tolist() == [2.0, 2.0, 2.0, 2.0, 2.0, 1.0, 0.5]


def test_counts_take_numpy_integers_as_the_other_numeric_arguments(
    interp: Interpretation, tmp_path: Path
) -> None:
    # np.int64 (e.g. from np.arange or a config array) was refused as 'not an integer'
    assert interp.most_confused(np.int64(2)) == [("b", "c", 2)]
    losses, indices = interp.top_losses(np.int64(2))
    assert indices.tolist() == interp.top_losses(2)[1].tolist() and len(losses) == 2
    assert interp.plot_top_losses(np.int32(3), tmp_path / "top.png").read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 5\], but got np.True_"):
        interp.top_losses(np.bool_(True))


def test_confusion_counts_rows_are_actual_and_columns_predicted() -> None:
    counts = confusion_counts(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 0, 1, 1]), 3)
    np.testing.assert_array_equal(counts, [[1, 0, 0], [1, 1, 0], [0, 1, 0]])


def test_each_validation_keeps_its_predictions_for_the_confusion_matrix() -> None:
    dls = make_dataloaders("shapes", image_size=16, batch_size=32)
    seed_everything(0)
    learn = Learner(build_model("simple_cnn", 3), dls, seed=0, device="cpu", progress=False)
    assert learn.valid_preds is None and learn.valid_targets is None
    seen: list[np.ndarray] = []

    class Keep(Callback):
        def after_validate(self) -> None:
            preds, targets = self.learn.valid_preds, self.learn.valid_targets
            seen.append(confusion_counts(targets, preds, 3))

    with learn.added_cbs(Keep()):
        learn.fit_one_cycle(2, 1e-2)
    assert len(seen) == 2 and not np.array_equal(seen[0], seen[1])  # each epoch its own
    # the last epoch's counts are those of a second pass over the data with its weights
    np.testing.assert_array_equal(seen[-1], Interpretation.from_learner(learn).confusion_matrix())
    assert np.trace(seen[-1]) / 60 == pytest.approx(learn.history[-1]["accuracy"])
