"""`train.ema`: an exponential moving average of the weights, swapped in for inline evaluation.

Model Garden trains it; `tfod.model.weights.read_weights` reads the averages from a checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def swapped_in(optimizer: Any) -> Iterator[None]:
    """A context in which the live model holds the averaged weights (inline evaluation)."""
    optimizer.swap_weights()
    try:
        yield
    finally:
        optimizer.swap_weights()
