"""A local run's data, read once on this machine before Ray starts or any MLflow run exists."""

from __future__ import annotations

import logging

from sweeps.preflight._report import PreflightError
from sweeps.spec import SweepSpec
from sweeps.spec._task import is_uri

__all__ = ["PREFLIGHT_IMAGE_SIZE", "check_local_data"]

logger = logging.getLogger(__name__)

PREFLIGHT_IMAGE_SIZE = 8
"""Side the images are decoded at for the check: every file is opened, little is kept."""


def check_local_data(spec: SweepSpec) -> bool:
    """Refuse a local sweep whose ``image_folder`` data the trials could not load.

    Without this, every trial would start, fail on the same bad file and be retried
    ``failure.max_failures`` times, after the experiment and parent run were created. The check
    builds the dataloaders exactly as a trial does (same dataset options), at
    :data:`PREFLIGHT_IMAGE_SIZE` pixels, so every image file is decoded once: an empty folder,
    a class folder with no images or a file PIL cannot read is reported with its path. Bundled
    and generated datasets (``digits``, ``shapes``) and remote paths are not read here.

    Args:
        spec: The sweep.

    Returns:
        True when the data were read, False when the dataset was not checked.

    Raises:
        PreflightError: naming ``task.dataset`` and the folder or file at fault.
    """
    dataset, task = spec.task.dataset, spec.task
    if dataset.name != "image_folder" or dataset.path is None or is_uri(dataset.path):
        return False
    from trainers import make_dataloaders  # torch: imported only when there is data to read

    logger.info("reading %s once before the sweep starts", dataset.path)
    try:
        make_dataloaders(
            dataset.name,
            image_size=PREFLIGHT_IMAGE_SIZE,
            batch_size=task.batch_size,
            valid_pct=dataset.valid_pct,
            seed=dataset.seed,
            oversample=task.oversample,
            path=dataset.path,
            **dataset.options,
        )
    except (ValueError, OSError) as error:
        raise PreflightError(
            f"task.dataset: the trials could not load their data: {error} "
            "Fix the folder (or task.dataset.path) and run again."
        ) from None
    return True
