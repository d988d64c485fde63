"""`train.early_stop`: stop a run whose evaluation metric has stopped improving."""

from __future__ import annotations

from typing import Any

from tfod.config.schema import EarlyStop


class EarlyStopped(Exception):
    """Raised inside the training loop when the metric has plateaued; the message says why."""


def plateau_reason(rows: list[dict[str, Any]], rule: EarlyStop) -> str | None:
    """Why training should stop under `rule`, given the evaluations so far (None: go on)."""
    values = sorted(
        (int(r["step"]), float(r["metrics"][rule.metric]))
        for r in rows
        if "step" in r and isinstance(r.get("metrics", {}).get(rule.metric), (int, float))
    )
    best, best_step, since = float("-inf"), None, 0
    for step, value in values:
        if value > best + rule.min_delta:
            best, best_step, since = value, step, 0
        else:
            since += 1
    if since >= rule.patience:
        return (
            f"{rule.metric} has not improved by more than {rule.min_delta:g} in {since} evaluations "
            f"(best {best:.3f} at step {best_step})"
        )
    return None
