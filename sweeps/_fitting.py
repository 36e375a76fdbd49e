"""Build a trial's data and Learner, and train it, as the spec's ``task`` says, able to start at
any epoch (``lrsweep lr-find --spec`` builds its Learner here too).

The spec's schedule (one-cycle, SGDR or constant) and optional fine-tuning phases map onto the
trainers' ``fit_*`` calls with ``start_epoch``, so a trial restarted from a checkpoint after its
worker died continues the very schedule it was on. Epochs are counted over the whole trial
(training records of ``learn.history``), frozen phase included.
"""

from __future__ import annotations

import json
from typing import Any

from trainers import Learner, ProgressiveResize, build_model, make_dataloaders, seed_everything


def training_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-epoch records of a history (a recipe's step markers have ``epoch`` None)."""
    return [row for row in history if row.get("epoch") is not None]


DATA_CACHE: dict[str, tuple[Any, tuple[Any, Any]]] = {}
"""The last trial's data in this worker process, by the task fields that build it: the next
trial of the sweep (Tune reuses the worker) reseeds it instead of loading and resizing every
image again (an ``image_folder`` or ``cifar10`` decodes its files once per worker)."""


def dataloaders(task: Any, seed: int) -> Any:
    """A trial's data as the spec's ``task`` builds it, reseeded with the trial's ``seed``
    (its own order and augmentation streams over the dataset seed's split)."""
    dataset = task.dataset
    augment = task.augment.model_dump() if task.augment is not None else None
    key = json.dumps(
        [
            dataset.model_dump(mode="json"),
            task.image_size,
            task.batch_size,
            augment,
            task.oversample,
        ],
        sort_keys=True,
        default=str,
    )
    dls, augments = DATA_CACHE.get(key, (None, None))
    if dls is not None and (dls.augment, dls.train.augment) != augments:
        dls = None  # something switched its augmentation and did not switch it back: build anew
    if dls is None:
        dls = make_dataloaders(
            dataset.name,
            image_size=task.image_size,
            batch_size=task.batch_size,
            valid_pct=dataset.valid_pct,
            seed=dataset.seed,
            augment=augment,
            oversample=task.oversample,
            path=dataset.path,
            **dataset.options,
        )
        DATA_CACHE.clear()  # one dataset held at a time
        DATA_CACHE[key] = (dls, (dls.augment, dls.train.augment))
    dls.train.reseed(seed)  # the trial seed's own order and augmentation streams
    return dls


_RESIZERS: dict[tuple[tuple[int, int], ...], ProgressiveResize] = {}
"""The last task's ``ProgressiveResize`` in this worker process: it keeps the smaller sizes'
loaders of the cached data (:data:`DATA_CACHE`) for the next trial, as the data is kept."""


def resizer(task: Any) -> ProgressiveResize | None:
    """The ``ProgressiveResize`` of ``task.progressive_resizing`` (None without stages)."""
    stages = tuple((stage.size, stage.epochs) for stage in task.progressive_resizing)
    if not stages:
        return None
    if stages not in _RESIZERS:
        _RESIZERS.clear()
        _RESIZERS[stages] = ProgressiveResize(stages)
    return _RESIZERS[stages]


def at_stage(learn: Learner, task: Any, full: Any) -> None:
    """Give ``learn`` the loaders of the epoch it trains next (``full``, the task's image size,
    unless ``task.progressive_resizing`` says a smaller one): a range test before the first
    epoch runs on the images the first epochs train on."""
    resize = resizer(task)
    if resize is not None:
        learn.dls = resize.loaders_at(len(training_rows(learn.history)), full)


def learner(task: Any, dls: Any, seed: int, *, device: str | None = None) -> Learner:
    """A trial's Learner as the spec's ``task`` builds it: its model seeded with ``seed``, on
    ``device`` (None: CUDA when visible, as a trial, whose GPUs Ray makes visible, has it)."""
    seed_everything(seed)
    model = build_model(
        task.model.arch,
        dls.n_classes,
        pretrained=task.model.pretrained,
        in_channels=dls.in_channels,
    )
    accelerator = task.accelerator
    return Learner(
        model,
        dls,
        opt=task.opt,
        wd=task.wd,
        wd_bn_bias=task.wd_bn_bias,
        progress=False,
        amp=accelerator.amp,
        channels_last=accelerator.channels_last,
        compile=accelerator.compile,
        fused_step=accelerator.fused_step,
        device=device,
    )


def sgdr_cycles(epochs: int, cycle_len: int, cycle_mult: int) -> int:
    """The fewest SGDR cycles covering ``epochs`` (training is cut at ``epochs``)."""
    cycles, total, length = 0, 0, cycle_len
    while total < epochs:
        total += length
        length *= cycle_mult
        cycles += 1
    return cycles


def _fit(learn: Learner, schedule: Any, epochs: int, lr: Any, start_epoch: int) -> None:
    if start_epoch >= epochs:
        return
    if schedule.kind == "one_cycle":
        learn.fit_one_cycle(
            epochs,
            lr,
            pct_start=schedule.pct_start,
            div=schedule.div,
            div_final=schedule.div_final,
            start_epoch=start_epoch,
        )
    elif schedule.kind == "sgdr":
        # Whole cycles are scheduled; the trial's reporter ends the fit at ``epochs``.
        cycles = sgdr_cycles(epochs, schedule.cycle_len, schedule.cycle_mult)
        learn.fit_sgdr(
            cycles,
            schedule.cycle_len,
            lr,
            cycle_mult=schedule.cycle_mult,
            start_epoch=start_epoch,
        )
    elif schedule.kind == "flat_cos":
        learn.fit_flat_cos(
            epochs,
            lr,
            pct_start=schedule.pct_start,
            div_final=schedule.div_final,
            start_epoch=start_epoch,
        )
    elif schedule.kind == "constant":
        learn.fit(epochs, lr, start_epoch=start_epoch)
    else:
        raise ValueError(
            "task.schedule.kind must be one_cycle, sgdr, flat_cos or constant, but got "
            f"{schedule.kind!r}."
        )


def train(learn: Learner, task: Any, lr: float, *, should_continue: Any = None) -> None:
    """Train ``learn`` at peak rate ``lr`` from the epochs in its history up to ``task.epochs``.

    With ``task.fine_tune`` the first ``freeze_epochs`` epochs train the head alone
    (one-cycle, ``pct_start=0.99``, at ``lr``; on cached body activations with
    ``fine_tune.precompute``) and the rest train everything with discriminative
    rates ``slice(lr / 2 / lr_mult, lr / 2)``, as fastai's ``fine_tune`` does, but on the
    spec's schedule (``Learner.fine_tune`` and fastai use one-cycle with ``pct_start=0.3`` and
    ``div=5`` there: set them in ``task.schedule`` to match).

    Args:
        learn: The trial's Learner (its history says how many epochs are done).
        task: The spec's ``task`` section.
        lr: The trial's learning rate (the top layer group's peak rate).
        should_continue: Called between the fine-tuning phases; False skips the second phase
            (the trial was stopped in the first).

    With ``task.progressive_resizing`` the first epochs (counted over the whole trial, frozen
    ones included) train on smaller images, inside the same schedule (``ProgressiveResize``).
    """
    resize = resizer(task)
    if resize is None:
        _train(learn, task, lr, should_continue)
        return
    with learn.added_cbs(resize):
        try:
            _train(learn, task, lr, should_continue)
        finally:  # also after an error (a diverged trial): what follows sees the full size
            if resize.full is not None:
                learn.dls = resize.full


def _train(learn: Learner, task: Any, lr: float, should_continue: Any) -> None:
    done = len(training_rows(learn.history))
    fine_tune = task.fine_tune
    if fine_tune is None:
        _fit(learn, task.schedule, task.epochs, lr, done)
        return
    frozen = fine_tune.freeze_epochs
    if done < frozen:
        learn.freeze()
        learn.phase = "frozen"
        learn.fit_one_cycle(
            frozen, slice(lr), pct_start=0.99, start_epoch=done, precompute=fine_tune.precompute
        )
        if should_continue is not None and not should_continue():
            return
    learn.unfreeze()
    learn.phase = "unfrozen"
    half = lr / 2
    slice_lr = slice(half / fine_tune.lr_mult, half)
    _fit(
        learn,
        task.schedule,
        task.epochs - frozen,
        slice_lr,
        max(0, len(training_rows(learn.history)) - frozen),
    )
