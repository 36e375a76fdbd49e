"""Project-wide test setup: one torch thread per process.

The CI machine has 2 cores shared by the test process and Ray workers; torch's default of one
thread per core oversubscribes them and makes tiny CPU trainings ~10x slower.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)
