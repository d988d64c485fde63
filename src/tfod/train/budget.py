"""`train.time` / `tfod train --time 10m`: a wall-clock budget instead of a step count.

A timed run starts with a provisional plan and calibrates on itself: after its first loops it
knows its steady steps per second and, from an evaluation at that point, how long one evaluation
takes. It then fits the step count, the evaluation points and the schedule (warmup, cosine decay
to zero) to the time that is left and goes on in the same process: the schedule's step counts are
variables the traced training step reads, so nothing is rebuilt or traced again. The batch-norm
momentum stays the provisional plan's (the model is built). A resumed timed run finishes its
fitted plan.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from tfod.config.experiment import Plan, make_plan
from tfod.config.schema import TfodConfig
from tfod.console import console
from tfod.errors import TfodError

MIN_BUDGET_SECONDS = 60.0  # building and tracing a detector alone takes tens of seconds
CALIBRATION_SHARE = 0.05  # of the budget spent measuring the steady rate (at most 30 s of it)
CALIBRATION_MAX_SECONDS = 30.0
CALIBRATION_MIN_LOOPS = 1  # steady loops after the first, which traces the graph
EVAL_SHARE = 0.15  # of the remaining time that evaluations may take
MAX_EVALUATIONS = 10
MAX_GAP_SECONDS = 1800.0  # of training between two checkpoints of a timed run, at most
TAIL_SECONDS = 5.0  # the last checkpoint, run.json and the plots


@dataclass(frozen=True)
class Calibration:
    """What a timed run measured on itself."""

    step: int  # where the calibration stopped (a checkpoint exists there)
    elapsed: float  # seconds of the budget spent so far
    steps_per_second: float  # steady training rate
    eval_seconds: float  # one evaluation (0 when an external evaluator scores the run)

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Fit:
    steps: int
    eval_every: int
    evaluations: int


def fit(budget: float, calibration: Calibration, per_loop: int) -> Fit:
    """The total steps and evaluation interval that end the run when `budget` seconds are spent.

    Raises:
        TfodError: the time left cannot hold even one loop of steps and one evaluation.
    """
    c = calibration
    left = budget - c.elapsed - TAIL_SECONDS
    if c.eval_seconds > 0:
        evaluations = int(min(MAX_EVALUATIONS, max(1, EVAL_SHARE * left // c.eval_seconds)))
    else:
        evaluations = MAX_EVALUATIONS
    more = int((left - evaluations * c.eval_seconds) * c.steps_per_second)
    if more < per_loop:
        needed = c.elapsed + c.eval_seconds + TAIL_SECONDS + per_loop / c.steps_per_second
        raise TfodError(
            f"the time budget of {budget:.0f} s is too short to train and evaluate: measuring "
            f"took {c.elapsed:.0f} s (building and tracing the model, then steps to step {c.step} "
            f"at {c.steps_per_second:.2f} steps/s) and one evaluation takes ~{c.eval_seconds:.0f} "
            f"s. Give at least {math.ceil(needed / 60 + 0.5)}m (the run keeps its checkpoint at "
            f"step {c.step}; the same command with a longer --time resumes it)",
            "train.time",
        )
    eval_every = per_loop * math.ceil((c.step + more) / evaluations / per_loop)
    # However long the budget, a checkpoint (and an evaluation) at least every MAX_GAP_SECONDS.
    eval_every = min(
        eval_every, per_loop * max(1, int(MAX_GAP_SECONDS * c.steps_per_second) // per_loop)
    )
    steps = steps_within(left, c, eval_every, per_loop)
    return Fit(steps, eval_every, evaluations_between(c.step, steps, eval_every))


def steps_within(left: float, c: Calibration, eval_every: int, per_loop: int) -> int:
    """The last step a run at step `c.step` reaches in `left` seconds, evaluations included."""
    steps = c.step + int(left * c.steps_per_second) // per_loop * per_loop
    for _ in range(3):  # the evaluations to pay for depend on the end step, and it on them
        pay = evaluations_between(c.step, steps, eval_every) * c.eval_seconds
        more = int(max(0.0, left - pay) * c.steps_per_second) // per_loop * per_loop
        steps = c.step + max(per_loop, more)
    return steps


def evaluations_between(step: int, end: int, eval_every: int) -> int:
    """Evaluations after `step` up to `end`: multiples of eval_every, and the last step."""
    return end // eval_every - step // eval_every + (1 if end % eval_every else 0)


class LiveSchedule:
    """The warmup and decay lengths of Model Garden's learning-rate schedule (linear warmup,
    then cosine) turned into variables before the training step is traced, so a fitted plan
    changes them in place."""

    def __init__(self, optimizer: Any, strategy: Any) -> None:
        import tensorflow as tf

        self.warmup = optimizer.learning_rate  # official.modeling.optimization.LinearWarmup
        self.decay = getattr(self.warmup, "_after_warmup_lr_sched", self.warmup)  # the cosine
        if not (hasattr(self.warmup, "_warmup_steps") and hasattr(self.decay, "decay_steps")):
            raise TfodError(
                "a time budget fits tfod's linear warmup and cosine schedule to the time; "
                "`overrides:` replaced that schedule. Remove the learning-rate override or set "
                "`train.steps`",
                "train.time",
            )
        with strategy.scope():
            self.warmup._warmup_steps = tf.Variable(
                float(self.warmup._warmup_steps), trainable=False, name="tfod_warmup_steps"
            )
            self.decay.decay_steps = tf.Variable(
                float(self.decay.decay_steps), trainable=False, name="tfod_decay_steps"
            )

    def set(self, warmup_steps: int, decay_steps: int) -> None:
        self.warmup._warmup_steps.assign(float(warmup_steps))
        self.decay.decay_steps.assign(float(decay_steps))


class LoopClock:
    """Times a timed run's training loops, leaving out what its loop actions do (evaluations,
    checkpoints): the first calibrates the run, the later ones re-fit its end to the budget."""

    def __init__(self, budget: float, started: float) -> None:
        self.budget = budget
        self.started = started  # time.monotonic() when the command started
        self.loops: list[tuple[int, float]] = []  # (steps, seconds) of each loop after the first
        self._step: int | None = None
        self._resumed = 0.0

    def loop_ended(self, step: int) -> None:
        """At the start of the loop action: the loop's steps and time are recorded."""
        now = time.monotonic()
        if self._step is not None:  # the first loop also traced the graph: not a measure
            self.loops.append((step - self._step, now - self._resumed))
        self._step = step

    def resumed(self) -> None:
        """At the end of the loop action: training goes on."""
        self._resumed = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def steps_per_second(self) -> float:
        steps = sum(n for n, _ in self.loops)
        return steps / max(1e-9, sum(t for _, t in self.loops))

    def calibrated_enough(self) -> bool:
        if len(self.loops) < CALIBRATION_MIN_LOOPS:
            return False
        steady = sum(t for _, t in self.loops)
        return steady >= min(CALIBRATION_MAX_SECONDS, CALIBRATION_SHARE * self.budget)

    def calibration(self, step: int, eval_seconds: float) -> Calibration:
        return Calibration(step, self.elapsed(), self.steps_per_second(), eval_seconds)

    def refit(
        self, step: int, end: int, eval_every: int, per_loop: int, eval_seconds: float
    ) -> int:
        """The end step that spends the rest of the budget at the rate measured so far; `end`
        when it differs by less than 2% (the schedule is not nudged for noise)."""
        now = Calibration(step, self.elapsed(), self.steps_per_second(), eval_seconds)
        left = self.budget - now.elapsed - TAIL_SECONDS
        better = steps_within(left, now, eval_every, per_loop)
        return better if abs(better - end) >= max(per_loop, 0.02 * end) else end


def fit_plan(
    config: TfodConfig,
    summary: dict[str, Any],
    plan: Plan,
    calibration: Calibration,
) -> tuple[Plan, dict[str, Any]]:
    """The plan that ends on time (the built model keeps its batch-norm momentum) and the
    run.json record of how it was fitted."""
    assert plan.time_budget is not None
    end = fit(plan.time_budget, calibration, plan.steps_per_loop)
    fitted = make_plan(
        config, summary, batch_size=plan.batch_size, steps=end.steps, eval_every=end.eval_every
    )
    new_plan = dataclasses.replace(fitted, norm_momentum=plan.norm_momentum)
    c = calibration
    console.print(
        f"Time budget {plan.time_budget / 60:.1f} min: after {c.elapsed:.0f} s, "
        f"{c.steps_per_second:.2f} steps/s and ~{c.eval_seconds:.1f} s per evaluation: training "
        f"to step {end.steps} with {end.evaluations} evaluation(s) (every {end.eval_every}), "
        f"warmup {new_plan.warmup_steps}, cosine decay to the last step; the end is re-fitted "
        "to the measured rate as it goes"
    )
    record = {
        "budget_seconds": plan.time_budget,
        "calibration": calibration.as_dict(),
        "fitted_steps": end.steps,
    }
    return new_plan, record
