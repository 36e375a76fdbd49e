"""trainers: PyTorch training the fast.ai way, with no Ray, MLflow or Optuna in sight.

Example:
    >>> from trainers import Learner, build_model, make_dataloaders, seed_everything
    >>> dls = make_dataloaders("digits", image_size=16, batch_size=64)
    >>> seed_everything(0)
    >>> learn = Learner(build_model("simple_cnn", dls.n_classes, in_channels=1), dls, seed=0)
    >>> result = learn.lr_find()  # doctest: +SKIP
    >>> learn.fit_one_cycle(3, result.suggestion)  # doctest: +SKIP
"""

from __future__ import annotations

from trainers import schedules
from trainers.callbacks import (
    Callback,
    EarlyStoppingCallback,
    ProgressCallback,
    ProgressiveResize,
    Recorder,
    SaveModelCallback,
)
from trainers.data import DataLoaders, make_dataloaders
from trainers.diagnose import Diagnosis, diagnose
from trainers.errors import CallbackError, CancelBatch, CancelEpoch, CancelFit, TrainingDiverged
from trainers.export import Predictor, load_learner
from trainers.interpret import Interpretation
from trainers.learner import Learner
from trainers.lr_finder import LRFindResult
from trainers.models import GroupedModel, build_model
from trainers.seeding import seed_everything
from trainers.suggestions import minimum, slide, steep, valley

__all__ = [
    "Callback",
    "CallbackError",
    "CancelBatch",
    "CancelEpoch",
    "CancelFit",
    "DataLoaders",
    "Diagnosis",
    "EarlyStoppingCallback",
    "GroupedModel",
    "Interpretation",
    "LRFindResult",
    "Learner",
    "Predictor",
    "ProgressCallback",
    "ProgressiveResize",
    "Recorder",
    "SaveModelCallback",
    "TrainingDiverged",
    "build_model",
    "diagnose",
    "load_learner",
    "make_dataloaders",
    "minimum",
    "schedules",
    "seed_everything",
    "slide",
    "steep",
    "valley",
]
