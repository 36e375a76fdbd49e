"""TensorLoader (batches by indexing in-memory tensors) and DataLoaders (a train/valid pair)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from trainers.data._base import ImageSource, is_count
from trainers.data._split import channel_stats
from trainers.data.augment import Augment
from trainers.seeding import derive_seed


def normalising(
    mean: Any, std: Any, channels: int, scale: float = 255.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gain, bias)``, each ``(1, C, 1, 1)``, with ``(x / scale - mean) / std = x * gain +
    bias``: normalising a batch is one fused pass (``torch.addcmul(bias, x, gain)``). A mean or
    std of None is 0 or 1 per channel."""
    mean_t = torch.zeros(channels) if mean is None else torch.as_tensor(mean).float()
    std_t = torch.ones(channels) if std is None else torch.as_tensor(std).float()
    return (1 / (std_t * scale)).view(1, -1, 1, 1), (-mean_t / std_t).view(1, -1, 1, 1)


class TensorLoader:
    """Yields ``(images, labels)`` batches by indexing tensors: no per-item Dataset, no PIL.

    Images may be stored as uint8 (0..255, four times smaller) or float; every batch comes out
    float32, normalised as ``(x / 255 - mean) / std`` for uint8 storage (``(x - mean) / std`` for
    float), then augmented, on the loader's device.

    Order: sequential unless ``shuffle``; with ``sample_weights`` each epoch draws ``len(self)``
    batches' worth of indices *with replacement* in proportion to the weights (oversampling).
    Shuffling / sampling and augmentation each have their own ``torch.Generator`` seeded from
    ``seed``, so switching augmentation on or off never changes the order. The epoch's order is
    drawn when ``iter()`` is called; its augmentation batch by batch, so a state taken mid-epoch
    holds that stream part-way (take states between epochs, as checkpoints do).

    Last batch: with ``drop_single`` a final batch of exactly one image is dropped (BatchNorm
    cannot train on it); every other incomplete batch is kept. Validation loaders never drop.

    Args:
        images: ``(N, C, H, W)`` uint8 or float tensor.
        labels: ``(N,)`` integer class indices.
        batch_size: Images per batch (positive).
        shuffle: Reshuffle at every epoch.
        augment: Batch transform applied after normalisation, or None.
        sample_weights: ``(N,)`` non-negative weights for sampling with replacement, or None.
            Kept on the CPU beside the order's generator, wherever the images live.
        mean: Per-channel mean (0..1 scale for uint8 images); None for no centring.
        std: Per-channel std (same scale); None for no scaling.
        seed: Seed of both generators.
        drop_single: Drop a final batch holding one image.
        device: Where batches (and the stored tensors) live.

    Raises:
        ValueError: if ``images`` and ``labels`` disagree in length, ``batch_size`` is not
            positive, or ``sample_weights`` is not ``N`` finite non-negative weights, some
            positive.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        batch_size: int,
        shuffle: bool = False,
        augment: Augment | None = None,
        sample_weights: torch.Tensor | None = None,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
        seed: int = 0,
        drop_single: bool = False,
        device: str | torch.device = "cpu",
    ) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(
                "images must be (N, C, H, W) and labels (N,), but got shapes "
                f"{tuple(images.shape)} and {tuple(labels.shape)}."
            )
        if not is_count(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, but got {batch_size!r}.")
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.augment = augment
        self.drop_single = drop_single
        self.sample_weights = _checked_weights(sample_weights, len(labels))
        scale = 255.0 if images.dtype == torch.uint8 else 1.0
        self._gain, self._bias = normalising(mean, std, images.shape[1], scale)
        self.images = images
        self.labels = labels.long()
        self._order_gen, self._augment_gen = torch.Generator(), torch.Generator()
        self.reseed(seed)
        self.to(device)

    @property
    def device(self) -> torch.device:
        """Where the tensors live and batches come out."""
        return self.images.device

    def to(self, device: str | torch.device) -> TensorLoader:
        """Move the stored tensors to ``device`` (in place) and return self. Activations a
        ``precompute`` fit kept for these images are dropped on a move (they lie on the old
        device)."""
        device = torch.device(device)
        if self.images.device != device:
            self._activations = None
        self.images = self.images.to(device)
        self.labels = self.labels.to(device)
        self._gain = self._gain.to(device)
        self._bias = self._bias.to(device)
        return self

    def __len__(self) -> int:
        # counted without torch by sweeps._data_notes.steps_per_epoch: change both together
        n = len(self.labels)
        if self.drop_single and n > 1 and n % self.batch_size == 1:
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self._batches(self._epoch_order())

    def _epoch_order(self) -> torch.Tensor:
        n = len(self.labels)
        if self.sample_weights is not None:
            order = torch.multinomial(
                self.sample_weights, n, replacement=True, generator=self._order_gen
            )
        elif self.shuffle:
            order = torch.randperm(n, generator=self._order_gen)
        else:
            order = torch.arange(n)
        return order[: min(n, len(self) * self.batch_size)].to(self.device)

    def _batches(self, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            images = self.normalise(self.images.index_select(0, idx))
            if self.augment is not None:
                images = self.augment(images, generator=self._augment_gen)
            yield images, self.labels.index_select(0, idx)

    def one_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first batch the next epoch would yield (shuffled, augmented), leaving the
        shuffle and augmentation streams where they were: a look at the data changes no
        training run (``next(iter(loader))`` would draw from them).

        Raises:
            ValueError: for a loader that yields no batch.
        """
        state = self.state_dict()
        try:
            return next(iter(self))
        except StopIteration:
            raise ValueError(f"{self!r} yields no batch.") from None
        finally:
            self.load_state_dict(state)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Stored-format images to normalised float32 (no augmentation)."""
        return torch.addcmul(self._bias, images.float(), self._gain)

    def normalised_images(self) -> torch.Tensor:
        """Every image, normalised, in dataset order (computed on each call)."""
        return self.normalise(self.images)

    def reseed(self, seed: int) -> None:
        """Start the shuffle order and the augmentation afresh from ``seed``, as if built with it.

        Each is a stream of its own (:func:`~trainers.seeding.derive_seed`): they share no draws
        with each other, with any other seed's streams, or with ``seed_everything(seed)``.

        Raises:
            ValueError: if ``seed`` is not an integer in ``[0, 2**64)``.
        """
        order, augment = derive_seed(seed, "order"), derive_seed(seed, "augment")
        self._order_gen.manual_seed(order)
        self._augment_gen.manual_seed(augment)
        self.seed = int(seed)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The RNG states of shuffling / sampling and of augmentation."""
        return {"order": self._order_gen.get_state(), "augment": self._augment_gen.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore states from :meth:`state_dict`; the next epoch then repeats exactly.

        Raises:
            ValueError: if a key is missing.
        """
        for key in ("order", "augment"):
            if key not in state:
                raise ValueError(
                    f"TensorLoader state is missing {key!r}; expected the keys "
                    f"['order', 'augment'], got {sorted(state)}."
                )
        self._order_gen.set_state(state["order"])
        self._augment_gen.set_state(state["augment"])

    def share_rng(self, other: TensorLoader) -> None:
        """Draw order and augmentation from ``other``'s generators (the same objects, not copies).

        Both loaders' states then move together: a loader built over cached features can stand
        in for ``other`` while ``other.state_dict()`` stays current.
        """
        self._order_gen, self._augment_gen = other._order_gen, other._augment_gen

    def __repr__(self) -> str:
        return (
            f"TensorLoader(n={len(self.labels)}, batch_size={self.batch_size}, "
            f"batches={len(self)}, shuffle={self.shuffle}, "
            f"oversample={self.sample_weights is not None}, device={self.device})"
        )


class DataLoaders:
    """A training and a validation :class:`TensorLoader` over one split of an image source.

    Built by ``make_dataloaders``. The training loader shuffles (or oversamples), augments and
    drops a final single-image batch; the validation loader does none of these. Both normalise
    with the training split's per-channel ``mean`` / ``std`` (0..1 scale), computed at the first
    image size and kept by :meth:`resize` so the model sees the same input scale.

    Args:
        source: The dataset.
        train_idx: Indices of the training images in ``source``.
        valid_idx: Indices of the validation images.
        image_size: Side of the square images.
        batch_size: Images per batch, for both loaders.
        seed: Seed of the training loader's generators.
        augment: Train-time batch transform, or None.
        oversample: Sample training images with weight ``1 / class count``.
        mean: Per-channel mean on the 0..1 scale; computed on the training split when None.
        std: Per-channel std, likewise.
        device: Where the tensors live.

    Attributes:
        train, valid: The loaders.
        classes: Class names; ``n_classes`` their number.
        in_channels, image_size, batch_size, seed: As built.
        augment: The train-time :class:`Augment`, or None; TTA calls it directly.
        mean, std: float32 ``(C,)`` normalisation statistics.
        oversample: Whether the training loader samples classes equally often.
    """

    def __init__(
        self,
        source: ImageSource,
        *,
        train_idx: torch.Tensor,
        valid_idx: torch.Tensor,
        image_size: int,
        batch_size: int,
        seed: int,
        augment: Augment | None = None,
        oversample: bool = False,
        mean: torch.Tensor | None = None,
        std: torch.Tensor | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self._source = source
        self._train_idx, self._valid_idx = train_idx, valid_idx
        self.classes = list(source.classes)
        self.image_size, self.batch_size, self.seed = image_size, batch_size, seed
        self.augment, self.oversample = augment, oversample
        images = _checked_images(source, image_size)
        train_images, valid_images = images[train_idx], images[valid_idx]
        if mean is None or std is None:
            mean, std = channel_stats(train_images)
        self.mean, self.std = mean, std
        train_labels = source.labels[train_idx]
        self.train = TensorLoader(
            train_images,
            train_labels,
            batch_size=batch_size,
            shuffle=True,
            augment=augment,
            sample_weights=_balancing_weights(train_labels) if oversample else None,
            mean=mean,
            std=std,
            seed=seed,
            drop_single=True,
            device=device,
        )
        self.valid = TensorLoader(
            valid_images,
            source.labels[valid_idx],
            batch_size=batch_size,
            mean=mean,
            std=std,
            seed=seed,
            device=device,
        )

    @property
    def n_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Image channels (1 greyscale, 3 RGB)."""
        return int(self.train.images.shape[1])

    def one_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A training batch as the next epoch would start, drawing nothing from the data's
        streams (fastai's ``dls.one_batch()``); ``dls.valid.one_batch()`` for validation."""
        return self.train.one_batch()

    @property
    def source(self) -> ImageSource:
        """The dataset the loaders were built from: its labels, classes, ``channels`` and own
        split (``valid_mask``), as opened once (an image folder's files are not scanned again)."""
        return self._source

    @property
    def resize_method(self) -> str:
        """How an image of another size is fitted to :attr:`image_size`: the source's
        ``resize_method`` (``image_folder``: ``"squish"`` or ``"crop"``), else ``"squish"``
        (every other dataset resizes the whole image)."""
        return str(getattr(self._source, "resize_method", "squish"))

    @property
    def device(self) -> torch.device:
        """Where batches come out."""
        return self.train.device

    @property
    def train_images(self) -> torch.Tensor:
        """All training images, normalised, unaugmented, in split order (a new tensor)."""
        return self.train.normalised_images()

    @property
    def train_labels(self) -> torch.Tensor:
        """Training labels, aligned with :attr:`train_images`."""
        return self.train.labels

    @property
    def valid_images(self) -> torch.Tensor:
        """All validation images, normalised, in the order the valid loader yields them."""
        return self.valid.normalised_images()

    @property
    def valid_labels(self) -> torch.Tensor:
        """Validation labels, aligned with :attr:`valid_images`."""
        return self.valid.labels

    def resize(self, image_size: int) -> DataLoaders:
        """The same split, seed, augmentation, statistics and device at another image size.

        The images are re-rendered from the source (files decoded again for ``image_size``),
        not resampled from the current size. The new training loader continues from this one's
        RNG state, so progressive resizing does not replay earlier epochs' orders.

        Raises:
            ValueError: if ``image_size`` is not a positive integer.
        """
        if not is_count(image_size) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, but got {image_size!r}.")
        resized = DataLoaders(
            self._source,
            train_idx=self._train_idx,
            valid_idx=self._valid_idx,
            image_size=int(image_size),
            batch_size=self.batch_size,
            seed=self.seed,
            augment=self.augment,
            oversample=self.oversample,
            mean=self.mean,
            std=self.std,
            device=self.device,
        )
        resized.load_state_dict(self.state_dict())
        return resized

    def to(self, device: str | torch.device) -> DataLoaders:
        """Move both loaders' tensors to ``device`` (in place) and return self.

        Batches, and the augmentation applied to them, then run on that device.
        """
        self.train.to(device)
        self.valid.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        """RNG state of the training loader's shuffling, sampling and augmentation."""
        return {"train": self.train.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next training epoch then repeats exactly.

        Raises:
            ValueError: if the ``"train"`` entry is missing.
        """
        if "train" not in state:
            raise ValueError(
                f"DataLoaders state must have the key 'train', but got keys {sorted(state)}."
            )
        self.train.load_state_dict(state["train"])

    def __repr__(self) -> str:
        return (
            f"DataLoaders(classes={self.n_classes}, image_size={self.image_size}, "
            f"in_channels={self.in_channels}, train={len(self.train_labels)}, "
            f"valid={len(self.valid_labels)}, batch_size={self.batch_size}, "
            f"augment={self.augment}, oversample={self.oversample}, device={self.device})"
        )


def _checked_images(source: ImageSource, image_size: int) -> torch.Tensor:
    """``source.images(image_size)``, refused unless uint8 ``(N, C, image_size, image_size)``.

    A dataset that renders another size, or another count than its labels, would otherwise
    train at the wrong size (or fail in a loader, far from the dataset's code).
    """
    images = source.images(image_size)
    expected = (len(source.labels), image_size, image_size)
    shape = tuple(images.shape) if isinstance(images, torch.Tensor) else None
    if shape is None or len(shape) != 4 or (shape[0], *shape[2:]) != expected:
        raise ValueError(
            f"dataset {type(source).__name__!r} images({image_size}) returned shape {shape}, but "
            f"it must be (N, C, {image_size}, {image_size}) with N={expected[0]}, one image per "
            "label; fix its images() method."
        )
    if images.dtype != torch.uint8:
        # channel_stats and the loaders read stored pixels as 0..255: float pixels in 0..1 would
        # be normalised to a mean in the hundreds without a word.
        raise ValueError(
            f"dataset {type(source).__name__!r} images({image_size}) returned dtype "
            f"{images.dtype}, but it must be torch.uint8 pixels in 0..255; for floats in 0..1, "
            "return (images * 255).round().to(torch.uint8) from its images() method."
        )
    return images


def _checked_weights(weights: Any, n: int) -> torch.Tensor | None:
    """``weights`` as a CPU float64 tensor of ``n`` drawable weights (None stays None).

    ``torch.multinomial`` draws with the loader's CPU generator, so CUDA weights would fail
    there at the first epoch; bad weights would fail there with torch's own message.
    """
    if weights is None:
        return None
    try:
        w = torch.as_tensor(weights).detach().to("cpu", torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"sample_weights must be numbers, one per image: {error}") from None
    if w.shape != (n,):
        raise ValueError(
            f"sample_weights must hold one weight per image, shape ({n},), but got shape "
            f"{tuple(w.shape)}."
        )
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not bool((w > 0).any()):
        raise ValueError(
            "sample_weights must be finite and non-negative with at least one positive weight."
        )
    return w


def _balancing_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-sample weight ``1 / count(class)``: every class is drawn equally often."""
    counts = torch.bincount(labels)
    return 1.0 / counts[labels].double()
