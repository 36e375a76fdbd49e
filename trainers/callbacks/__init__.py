"""Callbacks: the base class, the event names and the built-in callbacks."""

from __future__ import annotations

from trainers.callbacks._base import EVENTS, Callback
from trainers.callbacks._early_stopping import EarlyStoppingCallback
from trainers.callbacks._progress import ProgressCallback
from trainers.callbacks._progressive import ProgressiveResize
from trainers.callbacks._recorder import Recorder
from trainers.callbacks._save_best import SaveModelCallback
from trainers.callbacks._tracker import TrackerCallback

__all__ = [
    "EVENTS",
    "Callback",
    "EarlyStoppingCallback",
    "ProgressCallback",
    "ProgressiveResize",
    "Recorder",
    "SaveModelCallback",
    "TrackerCallback",
]
