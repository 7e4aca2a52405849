"""Shared test settings."""

import torch

# The suite's models are small: one intra-op thread avoids oversubscribing CI's two cores
# (measured here: 5 ms per step on one thread, up to 30 ms on two under load).
torch.set_num_threads(1)
