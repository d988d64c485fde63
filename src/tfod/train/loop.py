"""One training session of a run: Model Garden's runner (`official.core.train_lib`) stepping the
task, with tfod's action after every loop of steps: progress, checkpoints at the evaluation
points, inline evaluation, a timed run's fitting to its budget, early stopping and a clean stop on
a signal, agreed across the workers of a cluster."""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from typing import Any

from tfod.config.experiment import Plan, build_experiment
from tfod.config.schema import TfodConfig
from tfod.console import console
from tfod.errors import TfodError
from tfod.model.weights import uses_ema
from tfod.runs.rundir import LOSS_TAGS, RunDir
from tfod.train import budget, ema, qat
from tfod.train.cluster import Placement, any_worker, make_strategy
from tfod.train.early_stop import EarlyStopped, plateau_reason
from tfod.train.progress import ProgressBar


class StopRequested(Exception):
    """Raised inside the training loop after a checkpoint was saved on Ctrl-C / SIGTERM."""


class Replanned(Exception):
    """Raised inside a timed run's training loop when its end step changed: the runner's loop
    ends and starts again towards the new end (nothing is rebuilt)."""


@dataclasses.dataclass
class Job:
    """Where this process trains (the resolved placement and, in a cluster, its strategy) and
    since when (time.monotonic(), for a time budget)."""

    placement: Placement
    strategy: Any = None
    started: float = 0.0


class TrainingLoop:
    """Trains `run` until the plan's last step (or a stop: `stop["requested"]`, set by the signal
    handler). `calibrate`: a timed run measures its first loops, fits its plan to the time left
    (`tfod.train.budget`) and goes on with it."""

    def __init__(
        self,
        config: TfodConfig,
        plan: Plan,
        experiment: Any,
        run: RunDir,
        stop: dict[str, bool],
        job: Job,
        summary: dict[str, Any],
        inline_eval: bool = True,
        progress: bool = True,
        calibrate: bool = False,
    ) -> None:
        self.config, self.plan, self.experiment, self.run = config, plan, experiment, run
        self.stop, self.job, self.summary, self.inline_eval = stop, job, summary, inline_eval
        self.calibrate = calibrate
        self.timing = calibrate  # this session fits the end to the budget (a resumed one does not)
        self.clock = budget.LoopClock(plan.time_budget or 0.0, job.started)
        self.eval_seconds = 0.0
        self.last_eval: dict[str, Any] | None = None
        self.bar = ProgressBar(plan.steps, progress)
        self.schedule: budget.LiveSchedule | None = None
        self.evaluator: Any = None
        self.runner: Any = None

    def train(self) -> tuple[int, dict[str, Any] | None]:
        """(the step reached, the last inline evaluation)."""
        self._build()
        start = self.global_step()
        self._report_start(start)
        if start >= self.plan.steps:
            console.print(f"Run already at step {start} of {self.plan.steps}; nothing to train.")
            return start, next(iter(self.run.metrics()[-1:]), None)
        if start:
            console.print(f"Resuming from step {start}.")
        if self.plan.time_budget is not None:
            self.schedule = budget.LiveSchedule(self.runner.trainer.optimizer, self.strategy)
        ranges = (
            qat.fitted_ranges(qat.range_decay(self.plan.steps))
            if self.config.qat
            else nullcontext()
        )
        with self.bar, ranges:
            self.bar.start(start)
            while True:
                try:
                    self.runner.run()
                except Replanned:
                    continue
                break
        return self.global_step(), self.last_eval

    def _build(self) -> None:
        import tf_keras
        from official.modeling import performance

        from tfod.train.task import make_task

        tf_keras.utils.set_random_seed(self.config.train.seed)
        placement = self.job.placement
        if self.plan.batch_size % placement.replicas:  # the pre-flight check, after OOM halving
            raise TfodError(
                f"batch size {self.plan.batch_size} must be a multiple of the "
                f"{placement.replicas} replicas",
                "train.batch_size",
            )
        self.strategy = self.job.strategy or make_strategy(placement)
        self.experiment.runtime.num_gpus = placement.gpus
        performance.set_mixed_precision_policy(self.experiment.runtime.mixed_precision_dtype)
        with self.strategy.scope():
            self.task = make_task(self.experiment.task, logging_dir=str(self.run.path))
        self.runner = _runner_class()(
            distribution_strategy=self.strategy,
            task=self.task,
            mode="train",
            params=self.experiment,
            model_dir=str(self.run.path),
            train_actions=[self._on_loop],
        )

    def _report_start(self, start: int) -> None:
        if getattr(self.task, "restored", None) is not None:
            from tfod.train.report import print_restore

            self.run.update(initialized_from=self.task.restored)
            print_restore(console, self.task.restored)
        sessions = self.run.read().get("sessions", [])
        if sessions:
            sessions[-1]["start_step"] = start
            self.run.update(sessions=sessions)

    def global_step(self) -> int:
        return int(self.runner.trainer.global_step.numpy())

    def replan(self, plan: Plan, **record: Any) -> None:
        """Go on with `plan` (a timed run's fitted end): the live schedule, the runner's target
        and experiment.yaml follow it; runner.run() is called again for it."""
        self.plan = plan
        assert self.schedule is not None
        self.schedule.set(plan.warmup_steps, plan.steps)
        self.experiment.trainer.train_steps = plan.steps
        self.bar.total = plan.steps
        resolved = build_experiment(self.config, plan)
        if self.config.qat:
            qat.attach_parent(self.run, self.config, resolved)
        self.run.write_experiment(resolved)
        self.run.update(plan=plan.as_dict(), **record)

    def _on_loop(self, output: dict[str, Any]) -> None:
        self.clock.loop_ended(self.global_step())
        try:
            self._after_loop(output)
        finally:
            self.clock.resumed()

    def _after_loop(self, output: dict[str, Any]) -> None:
        step = self.global_step()
        loss = float(next((output[t] for t in LOSS_TAGS if t in output), float("nan")))
        rate = output.get("learning_rate")
        self.run.update(
            step=step, loss=loss, **({"learning_rate": float(rate)} if rate is not None else {})
        )
        self.bar.update(step, loss)
        if self.calibrate and self.clock.calibrated_enough():
            self._fit_to_the_time_left(step)
            raise Replanned
        replanned = self._refit_the_end(step)
        plan, manager = self.plan, self.runner.checkpoint_manager
        out_of_time = self._timed() and self.clock.elapsed() > self.clock.budget
        # Checkpoints at every evaluation point, whoever evaluates them (inline or `tfod eval
        # --watch` beside the trainer).
        at_eval = step % plan.eval_every == 0 or step >= plan.steps or out_of_time
        stopping = self.stop["requested"]  # read once: a signal may come meanwhile
        if self.job.placement.cluster is not None:  # every worker stops at the same step
            stopping = any_worker(self.strategy, stopping)
        if at_eval or stopping:
            manager.save(checkpoint_number=step, check_interval=False)
        if at_eval and self.inline_eval:
            self.last_eval = self.evaluate(step)
            self.eval_seconds = float(self.last_eval.get("seconds", self.eval_seconds))
        reason = self._stop_reason(step, out_of_time)
        if reason is not None:
            manager.save(checkpoint_number=step, check_interval=False)
            raise EarlyStopped(reason)
        if stopping:
            raise StopRequested
        if replanned:
            raise Replanned

    def _timed(self) -> bool:
        """A timed session past its calibration, short of its last step."""
        return self.timing and not self.calibrate and self.global_step() < self.plan.steps

    def _fit_to_the_time_left(self, step: int) -> None:
        self.runner.checkpoint_manager.save(checkpoint_number=step, check_interval=False)
        if self.inline_eval:  # the first evaluation traces the model: a sample times
            first = self.evaluate(step)  # the next ones
            self.eval_seconds = self.evaluator.time_detection(
                first["seconds"], self.plan.val_images
            )
        self.calibrate = False
        calibration = self.clock.calibration(step, self.eval_seconds)
        fitted, record = budget.fit_plan(self.config, self.summary, self.plan, calibration)
        self.replan(fitted, time_budget=record)

    def _refit_the_end(self, step: int) -> bool:
        """A timed run's end moved to the measured rate; True if it changed."""
        if not self._timed():
            return False
        plan = self.plan
        end = self.clock.refit(
            step, plan.steps, plan.eval_every, plan.steps_per_loop, self.eval_seconds
        )
        if end == plan.steps:
            return False
        self.replan(dataclasses.replace(plan, steps=end))
        return True

    def _stop_reason(self, step: int, out_of_time: bool) -> str | None:
        rule = self.config.train.early_stop
        reason = plateau_reason(self.run.metrics(), rule) if rule is not None else None
        if out_of_time:
            reason = (
                f"the time budget of {self.config.train.time} ran out at step {step} of "
                f"{self.plan.steps} (slower steps than measured; the schedule had not reached "
                "its end)"
            )
        if self.job.placement.cluster is not None and any_worker(self.strategy, reason is not None):
            reason = reason or "the chief's evaluation metric stopped improving"
        return reason

    def evaluate(self, step: int) -> dict[str, Any]:
        """COCO evaluation of the live model at `step` (its checkpoint just saved)."""
        from tfod.evaluate.evaluator import RunEvaluator

        if self.evaluator is None:
            model = self.runner.trainer.model
            self.evaluator = RunEvaluator(self.run, self.experiment, self.task, model)
        _, prefix = self.run.checkpoint(str(step))
        optimizer = self.runner.trainer.optimizer
        with ema.swapped_in(optimizer) if uses_ema(self.experiment) else nullcontext():
            row: dict[str, Any] = self.evaluator.evaluate(step, prefix, restore=False)
        m = row["metrics"]
        best = " [green](best)[/green]" if row.get("is_best") else ""
        self.bar.log(
            f"step {step}: AP {m['AP']:.3f}  AP50 {m['AP50']:.3f}  AP75 {m['AP75']:.3f}{best}"
        )
        return row


def _runner_class() -> Any:
    from official.core import train_lib

    class Runner(train_lib.OrbitExperimentRunner):  # type: ignore[misc]
        """Model Garden's runner, but a non-chief worker keeps its checkpoints in its own folder,
        which holds the chief's latest checkpoint, instead of a new empty temporary one: every
        worker then restores the same weights at the same point (restoring creates variables,
        and their creation must line up across workers)."""

        def _maybe_build_checkpoint_manager(self) -> Any:
            import tensorflow as tf

            if self.strategy is None or self.strategy.extended.should_checkpoint:
                return super()._maybe_build_checkpoint_manager()
            return tf.train.CheckpointManager(
                self.trainer.checkpoint,
                directory=self.model_dir,
                max_to_keep=1,
                step_counter=self.trainer.global_step,
                checkpoint_interval=self.params.trainer.checkpoint_interval,
                init_fn=self.trainer.initialize,
            )

    return Runner
