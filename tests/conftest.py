"""Test-wide settings: never load installed entry points, never touch the network."""

from __future__ import annotations

import os

os.environ.setdefault("STEERPLUG_NO_ENTRY_POINTS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch

# Tiny models gain nothing from intra-op threads, and oversubscribed cores make them ~30x slower.
torch.set_num_threads(1)
