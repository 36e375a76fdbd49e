"""lrsweep orchestration: specs, Ray Tune strategy arms, MLflow tracking, reports."""

from __future__ import annotations
