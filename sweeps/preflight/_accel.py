"""The spec's accelerator options against what the trials' device can train."""

from __future__ import annotations

import logging

from sweeps.preflight._report import PreflightError
from sweeps.spec import SweepSpec

__all__ = ["check_accelerator"]

logger = logging.getLogger(__name__)


def check_accelerator(spec: SweepSpec) -> bool:
    """Refuse a CPU sweep with ``amp: bf16`` at an image size PyTorch's CPU bf16 cannot train.

    On the CPU, PyTorch's bfloat16 convolution backward corrupts the weight gradient of a
    strided convolution whose input is 1 pixel wide (see
    ``trainers._accel.Accelerator.check_training_input``, which refuses such a batch in every
    trial). Small images reach that size (simple_cnn at 8 px, resnet18/34 below 32 px). This
    builds the spec's model (no pretrained weights, no data) and probes one sample at
    ``task.image_size``, so the sweep is refused before any trial or MLflow run exists.

    Args:
        spec: The sweep.

    Returns:
        True when the probe ran, False when there was nothing to check (no bf16, or GPUs).

    Raises:
        PreflightError: naming ``task.accelerator.amp`` and ``task.image_size``.
    """
    task = spec.task
    if task.accelerator.amp != "bf16" or spec.resources.gpu > 0:
        return False
    import torch  # imported only for a CPU bf16 sweep

    from trainers import build_model
    from trainers._accel import Accelerator

    model = build_model(task.model.arch, 2, in_channels=3).train()
    sizes = [("task.image_size", task.image_size)] + [
        (f"task.progressive_resizing.{i}.size", stage.size)
        for i, stage in enumerate(task.progressive_resizing)
    ]  # every size a trial trains at: the smallest fails first
    for field, size in sorted(sizes, key=lambda item: item[1]):
        batch = torch.zeros(1, 3, size, size)
        try:
            Accelerator.resolve(torch.device("cpu"), amp="bf16").check_training_input(model, batch)
        except ValueError as error:
            raise PreflightError(
                f"task.accelerator.amp: bf16 with resources.gpu: 0 trains on the CPU, and at "
                f"{field} {size}: {error} In the spec: raise {field}, set "
                "task.accelerator.amp: null, or give each trial a GPU (resources.gpu)."
            ) from None
    logger.debug("bf16 on the CPU can train %s at %s px", task.model.arch, sizes)
    return True
