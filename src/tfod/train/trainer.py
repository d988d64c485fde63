"""`tfod train`: Model Garden's own trainer (`official.core.train_lib`) with what users miss.

tfod adds: pre-flight checks, a run folder with run.json, a progress bar (step, steps/s, loss,
ETA) over a quiet terminal (the raw log goes to RUN/train.log), a clean stop on Ctrl-C or SIGTERM
(checkpoint saved, status recorded; the same command resumes), robust fine-tuning, and COCO
evaluation beside training (inline, or by a separate `tfod eval --watch`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from tfod import atomic
from tfod.config.experiment import Plan, build_experiment, make_plan
from tfod.config.schema import EarlyStop, TfodConfig, dump_config, parse_duration
from tfod.console import console, log_tail, native_output_to
from tfod.data.convert import load_summary
from tfod.errors import TfodError, describe
from tfod.model.weights import uses_ema
from tfod.runs.rundir import (
    CONFIG_COPY,
    EXPERIMENT_YAML,
    FINISHED,
    PARENT,
    RunDir,
    copy_checkpoint,
    git_revision,
    now,
    versions,
)
from tfod.train import batch_size as batch_size_search
from tfod.train import budget, ema, qat
from tfod.train.cluster import Placement, make_strategy, read_tf_config, resolve
from tfod.train.preflight import raise_on_errors, run_checks


class StopRequested(Exception):
    """Raised inside the training loop after a checkpoint was saved on Ctrl-C / SIGTERM."""


class EarlyStopped(Exception):
    """Raised inside the training loop when the metric has plateaued; the message says why."""


class Replanned(Exception):
    """Raised inside a timed run's training loop when its end step changed: the runner's loop
    ends and starts again towards the new end (nothing is rebuilt)."""


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


@dataclass(frozen=True)
class TrainResult:
    run: RunDir
    status: str
    step: int
    last_eval: dict[str, Any] | None


def train(
    config: TfodConfig,
    runs_dir: Path,
    run_name: str | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    inline_eval: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train `config` into `runs_dir/RUN`, resuming from the run's last checkpoint if it has one.

    Raises:
        TfodError: a pre-flight check failed, the run exists with different settings, another
            process is training it, or the disk filled up.
    """
    started = time.monotonic()
    summary = load_summary(config.data.dir)
    placement = resolve(config.train.strategy, gpu_count(), read_tf_config())
    if placement.cluster is not None and batch_size is None and config.train.batch_size == "auto":
        raise TfodError(
            "auto searches on one host before training starts, not across a cluster: run `tfod "
            "batch-size` on one worker's hardware, then set the global batch (that per-replica "
            f"batch x {placement.replicas} replicas)",
            "train.batch_size",
        )
    if placement.cluster is not None and config.train.time is not None:
        raise TfodError(
            "a time budget is fitted by measuring one process's steps; in a cluster set "
            "`train.steps` (a timed run on one worker's hardware shows the rate)",
            "train.time",
        )
    run = RunDir(runs_dir / (run_name or config.name))
    if placement.cluster is not None and run.exists():
        # Every task refuses a run of other settings before the cluster starts: the chief would
        # refuse it later, and a worker would then only see its peer gone.
        plan = make_plan(config, summary, batch_size=batch_size, steps=steps)
        _refuse_other_settings(run, config, plan)
    # A multi-worker strategy must exist before TensorFlow runs anything else in this process.
    peer_timeout = parse_duration(config.train.peer_timeout)
    strategy = make_strategy(placement, peer_timeout) if placement.cluster is not None else None
    job = _Job(placement, strategy, started)
    if not placement.is_chief:
        return _train_worker(config, summary, run, steps, batch_size, job)
    with run.lock():
        result = _train_locked(config, summary, run, steps, batch_size, inline_eval, progress, job)
    if job.strategy is not None:
        _any_worker(
            job.strategy, False
        )  # the workers wait for the chief's last writes, then all exit
    return result


@dataclass(frozen=True)
class _Job:
    """Where this process trains (the resolved placement and, in a cluster, its strategy) and
    since when (time.monotonic(), for a time budget)."""

    placement: Placement
    strategy: Any = None
    started: float = 0.0


def _train_worker(
    config: TfodConfig,
    summary: dict[str, Any],
    chief_run: RunDir,
    steps: int | None,
    batch_size: int | None,
    job: _Job,
) -> TrainResult:
    """A non-chief worker: the same steps as the chief, in a private temporary folder.

    It starts from the chief's latest checkpoint (read from the shared run folder) and writes
    nothing there; Model Garden keeps its checkpoints in a temporary folder too.
    """
    import tempfile

    assert job.placement.cluster is not None
    name = job.placement.cluster.name
    plan = make_plan(config, summary, batch_size=batch_size, steps=steps)
    experiment = build_experiment(config, plan)
    checkpoints = chief_run.checkpoints() if chief_run.exists() else {}
    resume = checkpoints[max(checkpoints)] if checkpoints else None
    console.print(
        f"{name}: {job.placement.describe(plan.batch_size)}; the chief writes {chief_run.path}"
        + (f"; starting from its checkpoint {resume.name}" if resume else "")
    )
    with tempfile.TemporaryDirectory(prefix=f"tfod-{name.replace(' ', '')}-") as tmp:
        run = RunDir(Path(tmp) / chief_run.name)
        run.path.mkdir()
        if resume is not None:
            copy_checkpoint(resume, run.path)
        if config.qat:
            qat.attach_parent(run, config, experiment)
        status = FINISHED
        try:
            with native_output_to(run.path / "train.log"), _stop_signals() as stop:
                step, _ = _run(config, plan, experiment, run, stop, False, False, job, summary)
        except StopRequested:
            status, step = "stopped", int(run.read().get("step", 0))
            console.print(f"{name}: stopped at step {step} with the chief")
        except EarlyStopped:
            status, step = FINISHED, int(run.read().get("step", 0))
        except Exception as err:
            # The worker's log goes with its temporary folder: its end says what TensorFlow saw.
            tail = log_tail(run.path / "train.log")
            console.print(f"{name}: the end of its TensorFlow log:\n{tail}", markup=False)
            if _peer_lost(err):
                raise _peer_lost_error(chief_run, err) from None
            raise
    _any_worker(job.strategy, False)  # wait for the chief to finish writing the run
    return TrainResult(chief_run, status, step, None)


def _train_locked(
    config: TfodConfig,
    summary: dict[str, Any],
    run: RunDir,
    steps: int | None,
    batch_size: int | None,
    inline_eval: bool,
    progress: bool,
    job: _Job,
) -> TrainResult:
    batch_search = None
    if batch_size is None:  # a resumed run keeps the batch it found or fell back to
        batch_size = (
            (run.read().get("plan") or {}).get("batch_size")
            if _auto_or_recovered(run, config)
            else None
        )
    if batch_size is None and config.train.batch_size == "auto":
        batch_search = _search_batch(config, summary, steps, run)
        batch_size = batch_search.batch
    plan = make_plan(config, summary, batch_size=batch_size, steps=steps)
    fitted = _fitted_time_budget(run, config) if steps is None else None
    if fitted is not None:
        plan = dataclasses.replace(plan, **fitted)
    experiment = build_experiment(config, plan)
    raise_on_errors(run_checks(config, plan, summary, experiment, job.placement), console)
    calibrate = plan.time_budget is not None and fitted is None and steps is None
    if inline_eval and job.placement.cluster is not None:
        inline_eval = False
        console.print(
            "Evaluation: not inline in a cluster (the chief alone would stall the others); the "
            "evaluator service (`tfod eval --watch`) scores each checkpoint"
        )
    _claim(run, config, plan)
    qat_state = None
    if config.qat:
        decay = qat.range_decay(plan.steps)
        qat_state = {**qat.attach_parent(run, config, experiment), "range_decay": decay}
    for prefix, problem in run.set_aside_damaged():
        console.print(
            f"[yellow]warning[/yellow]: {prefix} is damaged ({problem}); moved it to "
            f"{run.path / 'damaged'} and resuming from the previous checkpoint"
        )
    atomic.write_text(run.path / CONFIG_COPY, dump_config(config))
    _write_experiment(run, experiment)
    state = run.read()
    sessions = [*state.get("sessions", []), {"started": now()}]
    run.update(
        name=run.name,
        status="running",
        created=state.get("created", now()),
        sessions=sessions,
        versions=versions(),
        git_revision=git_revision(Path.cwd()),
        seed=config.train.seed,
        dataset={"dir": str(config.data.dir), "fingerprint": plan.dataset_fingerprint},
        plan=plan.as_dict(),
        **({"qat": qat_state} if qat_state else {}),
        eval_metric=config.eval.metric,
        evaluator="inline" if inline_eval else "external",
        process={"host": socket.gethostname(), "pid": os.getpid()},
        placement={
            "strategy": job.placement.strategy,
            "workers": job.placement.workers,
            "replicas": job.placement.replicas,
            "per_replica_batch": plan.batch_size // job.placement.replicas,
            "precision": config.train.precision,
        },
        **({"batch_search": batch_search.as_dict()} if batch_search else {}),
    )
    length = (
        f"a time budget of {config.train.time} (steps fitted after measuring the first ones)"
        if calibrate
        else f"{plan.steps} steps"
    )
    console.print(
        f"Run [bold]{run.path}[/bold]: {plan.preset}, batch {plan.batch_size}, {length}, "
        f"lr {plan.learning_rate:.4g}, BN momentum {plan.norm_momentum}; log in {run.path / 'train.log'}"
    )
    console.print(f"Strategy: {job.placement.describe(plan.batch_size)}")
    if qat_state:
        origin = qat_state["checkpoint"]
        console.print(
            f"Quantization-aware training of {qat_state['parent']} at step {origin['step']} "
            f"({origin.get('which', 'chosen')}; copied to {run.path / PARENT}): backbone, "
            f"{'FPN, ' if experiment.task.quantization.quantize_detection_decoder else ''}"
            f"head fake-quantized to int8; activation ranges averaged at {qat_state['range_decay']}"
        )
    status, step, last_eval = "failed", 0, None
    try:
        while True:
            try:
                with native_output_to(run.path / "train.log"), _stop_signals() as stop:
                    step, last_eval = _run(
                        config,
                        plan,
                        experiment,
                        run,
                        stop,
                        inline_eval,
                        progress,
                        job,
                        summary,
                        calibrate,
                    )
                break
            except Exception as err:
                if batch_size_search.is_disk_full(err):
                    raise TfodError(
                        f"the disk is full ({describe(err)}); nothing was changed: free some "
                        "space and run the same command to resume from the last checkpoint",
                        run.path,
                    ) from None
                if job.placement.cluster is not None and _peer_lost(err):
                    raise _peer_lost_error(run, err) from None
                if not batch_size_search.is_oom(err):
                    raise
                plan, experiment = _recover_from_oom(config, plan, run)
        status = FINISHED
    except KeyboardInterrupt:
        status = "interrupted"  # a second Ctrl-C: no checkpoint of the last steps
        raise
    except EarlyStopped as reason:
        status, step = FINISHED, int(run.read().get("step", 0))
        run.update(early_stopped={"step": step, "reason": str(reason)})
        console.print(f"[green]Stopped early at step {step}:[/green] {reason}.")
        last_eval = next((r for r in reversed(run.metrics()) if r.get("step") == step), None)
    except StopRequested:
        status = "stopped"
        step = int(run.read().get("step", 0))
        console.print(
            f"[yellow]Stopped at step {step}; checkpoint saved.[/yellow] Run the same command to resume."
        )
    finally:
        sessions = run.read().get("sessions") or sessions  # _run added this session's start step
        sessions[-1].update(ended=now(), status=status)
        try:
            run.update(status=status, sessions=sessions, **({"step": step} if step else {}))
        except OSError as err:  # a full disk: the error being raised says what to do
            console.print(f"[yellow]warning[/yellow]: could not record the run's status: {err}")
    _plot(run)
    return TrainResult(run, status, step, last_eval)


_FITTED = ("steps", "eval_every", "checkpoint_every", "warmup_steps", "norm_momentum")


def _fitted_time_budget(run: RunDir, config: TfodConfig) -> dict[str, Any] | None:
    """A timed run's fitted plan fields, kept when it resumes under the same budget."""
    if config.train.time is None or not run.exists():
        return None
    state = run.read()
    recorded = state.get("time_budget")
    if not recorded or recorded.get("budget_seconds") != parse_duration(config.train.time):
        return None
    return {key: state["plan"][key] for key in _FITTED}


def _fit_to_budget(
    config: TfodConfig,
    summary: dict[str, Any],
    plan: Plan,
    calibration: budget.Calibration,
) -> tuple[Plan, dict[str, Any]]:
    """The plan that ends on time (the built model keeps its batch-norm momentum) and the
    run.json record of how it was fitted."""
    assert plan.time_budget is not None
    fit = budget.fit(plan.time_budget, calibration, plan.steps_per_loop)
    fitted = make_plan(
        config, summary, batch_size=plan.batch_size, steps=fit.steps, eval_every=fit.eval_every
    )
    new_plan = dataclasses.replace(fitted, norm_momentum=plan.norm_momentum)
    c = calibration
    console.print(
        f"Time budget {plan.time_budget / 60:.1f} min: after {c.elapsed:.0f} s, "
        f"{c.steps_per_second:.2f} steps/s and ~{c.eval_seconds:.1f} s per evaluation: training "
        f"to step {fit.steps} with {fit.evaluations} evaluation(s) (every {fit.eval_every}), "
        f"warmup {new_plan.warmup_steps}, cosine decay to the last step; the end is re-fitted "
        "to the measured rate as it goes"
    )
    record = {
        "budget_seconds": plan.time_budget,
        "calibration": calibration.as_dict(),
        "fitted_steps": fit.steps,
    }
    return new_plan, record


def _plot(run: RunDir) -> None:
    """Draw the run's plots; a plotting problem never fails a finished training."""
    from tfod.runs.plots import write_run_plots

    try:
        with native_output_to(run.path / "train.log"):
            written = write_run_plots(run)
    except Exception as err:  # plots are a convenience; the run itself is complete
        console.print(f"[yellow]warning[/yellow]: could not draw the plots ({err})")
        return
    console.print(f"Plots: {run.path / 'plots'} ({', '.join(p.name for p in written)})")


def gpu_count() -> int:
    import tensorflow as tf

    with native_output_to(Path(os.devnull)):  # CUDA probing prints errors on hosts without a GPU
        return len(tf.config.list_physical_devices("GPU"))


OOM_FLOOR = 2  # below this a detector's batch-norm statistics are noise (batch 1: "mAP 0")


def _auto_or_recovered(run: RunDir, config: TfodConfig) -> bool:
    state = run.read()
    return bool(state.get("oom_events")) or (config.train.batch_size == "auto" and "plan" in state)


def _search_batch(
    config: TfodConfig, summary: dict[str, Any], steps: int | None, run: RunDir
) -> Any:
    """`batch_size: auto`: the largest batch that fits, searched (or cached) before training."""
    from tfod.train.batch_size import choose
    from tfod.train.report import print_batch_choice

    probe_plan = make_plan(config, summary, steps=steps)
    experiment = build_experiment(config, probe_plan)
    console.print("batch_size: auto - measuring real training steps at growing batch sizes...")
    with native_output_to(run.path / "batch_search.log"):
        choice = choose(experiment, max_batch=max(1, probe_plan.train_images))
    print_batch_choice(console, choice)
    return choice


def _recover_from_oom(config: TfodConfig, plan: Plan, run: RunDir) -> tuple[Plan, Any]:
    """Halve the batch, rescale the learning rate, record it, and resume from the last checkpoint."""
    old = plan.batch_size
    new = old // 2
    state = run.read()
    at_step = int(state.get("step", 0))
    if new < OOM_FLOOR:
        run.update(
            oom_events=[
                *state.get("oom_events", []),
                {"time": now(), "step": at_step, "batch_from": old, "batch_to": None},
            ]
        )
        raise TfodError(
            f"out of memory at batch {old} (step {at_step}); a batch below {OOM_FLOOR} cannot train "
            "batch norm. Use a smaller preset or input size, or free the device's memory."
        )
    new_plan = dataclasses.replace(
        plan,
        batch_size=new,
        learning_rate=plan.learning_rate * new / old,
        linear_rule_learning_rate=plan.linear_rule_learning_rate * new / old,
    )
    resumed_from = max(run.checkpoints(), default=0)
    event = {
        "time": now(),
        "step": at_step,
        "resumed_from": resumed_from,
        "batch_from": old,
        "batch_to": new,
        "learning_rate_to": new_plan.learning_rate,
    }
    run.update(oom_events=[*state.get("oom_events", []), event], plan=new_plan.as_dict())
    new_experiment = build_experiment(config, new_plan)
    if config.qat:
        qat.attach_parent(run, config, new_experiment)
    _write_experiment(run, new_experiment)
    console.print(
        f"[yellow]Out of memory at batch {old} (step {at_step}): resuming from step {resumed_from} "
        f"with batch {new} and learning rate {new_plan.learning_rate:.4g}.[/yellow]"
    )
    return new_plan, new_experiment


def _write_experiment(run: RunDir, experiment: Any) -> None:
    """experiment.yaml: the resolved Model Garden config; only the trainer writes it."""
    atomic.write_text(
        run.path / EXPERIMENT_YAML, yaml.safe_dump(experiment.as_dict(), sort_keys=False)
    )


def _claim(run: RunDir, config: TfodConfig, plan: Plan) -> None:
    """Refuse to resume a run with other settings (only the number of steps may change)."""
    if not run.exists():
        run.path.mkdir(parents=True, exist_ok=True)
        return
    _refuse_other_settings(run, config, plan)


def _refuse_other_settings(run: RunDir, config: TfodConfig, plan: Plan) -> None:
    """Raise if `run` holds a run of other settings than `config` and `plan`: resuming it would
    mix them. The number of steps, a time budget and the evaluation interval may change."""
    old = (
        yaml.safe_load((run.path / CONFIG_COPY).read_text(encoding="utf-8"))
        if (run.path / CONFIG_COPY).is_file()
        else None
    )
    new = yaml.safe_load(dump_config(config))
    old_plan = run.read().get("plan", {})
    ignore = {"train.steps", "train.time", "eval.every_steps"}
    differences = _differences(old or {}, new, ignore=ignore)
    if old_plan.get("batch_size") not in (None, plan.batch_size):
        differences.append(f"batch size {old_plan['batch_size']} -> {plan.batch_size}")
    if differences:
        # Compose users cannot pass options: compose.yaml says what they set instead.
        new_run = os.environ.get("TFOD_NEW_RUN_HINT") or "pass --run NEW_NAME"
        raise TfodError(
            f"run {run.name!r} exists with other settings ({'; '.join(differences[:5])}); resuming it "
            f"would mix them. For a new run, {new_run}; or restore the old settings.",
            run.path,
        )


def _differences(
    old: dict[str, Any], new: dict[str, Any], ignore: set[str], prefix: str = ""
) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        where = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if where in ignore:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, ignore, where + ".")
        elif a != b:
            out.append(f"{where}: {a!r} -> {b!r}")
    return out


@contextmanager
def _stop_signals() -> Iterator[dict[str, bool]]:
    """First Ctrl-C or SIGTERM asks for a clean stop; a second Ctrl-C interrupts at once."""
    stop = {"requested": False}
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: Any) -> None:
        if stop["requested"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop["requested"] = True
        console.print("[yellow]Stopping after the current steps (saving a checkpoint)...[/yellow]")

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _run(
    config: TfodConfig,
    plan: Plan,
    experiment: Any,
    run: RunDir,
    stop: dict[str, bool],
    inline_eval: bool,
    progress: bool,
    job: _Job,
    summary: dict[str, Any],
    calibrate: bool = False,
) -> tuple[int, dict[str, Any] | None]:
    """Train until the plan's last step (or a stop). `calibrate`: a timed run measures its first
    loops, fits its plan to the time left (`tfod.train.budget`) and goes on with it."""
    import tf_keras
    from official.modeling import performance

    from tfod.train.task import make_task

    clock = budget.LoopClock(plan.time_budget or 0.0, job.started)
    schedule: budget.LiveSchedule
    eval_seconds = 0.0
    timing = calibrate  # this session fits the end to the budget (a resumed timed run does not)
    tf_keras.utils.set_random_seed(config.train.seed)
    placement = job.placement
    if plan.batch_size % placement.replicas:  # the pre-flight check, again after an OOM halving
        raise TfodError(
            f"batch size {plan.batch_size} must be a multiple of the {placement.replicas} replicas",
            "train.batch_size",
        )
    strategy = job.strategy or make_strategy(placement)
    experiment.runtime.num_gpus = placement.gpus
    performance.set_mixed_precision_policy(experiment.runtime.mixed_precision_dtype)
    with strategy.scope():
        task = make_task(experiment.task, logging_dir=str(run.path))

    holder: dict[str, Any] = {}
    last_eval: dict[str, Any] | None = None
    bar = _ProgressBar(plan.steps, progress)

    def global_step() -> int:
        return int(holder["runner"].trainer.global_step.numpy())

    def replan(new_plan: Plan, **record: Any) -> None:
        """Go on with `new_plan` (a timed run's fitted end): the live schedule, the runner's
        target and experiment.yaml follow it; runner.run() is called again for it."""
        nonlocal plan
        plan = new_plan
        schedule.set(plan.warmup_steps, plan.steps)
        experiment.trainer.train_steps = plan.steps
        bar.total = plan.steps
        resolved = build_experiment(config, plan)
        if config.qat:
            qat.attach_parent(run, config, resolved)
        _write_experiment(run, resolved)
        run.update(plan=plan.as_dict(), **record)

    def on_loop(output: dict[str, Any]) -> None:
        clock.loop_ended(global_step())
        try:
            train_action(output)
        finally:
            clock.resumed()

    def train_action(output: dict[str, Any]) -> None:
        nonlocal last_eval, calibrate, eval_seconds
        step = global_step()
        loss = float(output.get("total_loss", float("nan")))
        rate = output.get("learning_rate")
        run.update(
            step=step, loss=loss, **({"learning_rate": float(rate)} if rate is not None else {})
        )
        bar.update(step, loss)
        manager = holder["runner"].checkpoint_manager
        replanned = False
        if calibrate and clock.calibrated_enough():
            manager.save(checkpoint_number=step, check_interval=False)
            if inline_eval:  # the first evaluation traces the model: a sample times the next
                first = _evaluate_inline(holder, run, experiment, task, step, bar)
                evaluator = holder["evaluator"]
                eval_seconds = evaluator.time_detection(first["seconds"], plan.val_images)
            calibrate = False
            fitted, record = _fit_to_budget(
                config, summary, plan, clock.calibration(step, eval_seconds)
            )
            replan(fitted, time_budget=record)
            raise Replanned
        if timing and not calibrate and step < plan.steps:
            end = clock.refit(step, plan.steps, plan.eval_every, plan.steps_per_loop, eval_seconds)
            if end != plan.steps:
                replan(dataclasses.replace(plan, steps=end))
                replanned = True
        out_of_time = (
            timing and not calibrate and clock.elapsed() > clock.budget and step < plan.steps
        )
        # Checkpoints at every evaluation point, whoever evaluates them (inline or `tfod eval
        # --watch` beside the trainer).
        at_eval = step % plan.eval_every == 0 or step >= plan.steps or out_of_time
        stopping = stop["requested"]  # read once: a signal may arrive while the loop ends
        if placement.cluster is not None:  # every worker must stop at the same step
            stopping = _any_worker(strategy, stopping)
        if at_eval or stopping:
            manager.save(checkpoint_number=step, check_interval=False)
        if at_eval and inline_eval:
            last_eval = _evaluate_inline(holder, run, experiment, task, step, bar)
            eval_seconds = float(last_eval.get("seconds", eval_seconds))
        rule = config.train.early_stop
        reason = plateau_reason(run.metrics(), rule) if rule is not None else None
        if out_of_time:
            reason = (
                f"the time budget of {config.train.time} ran out at step {step} of {plan.steps} "
                "(slower steps than measured; the schedule had not reached its end)"
            )
        if placement.cluster is not None and _any_worker(strategy, reason is not None):
            reason = reason or "the chief's evaluation metric stopped improving"
        if reason is not None:
            manager.save(checkpoint_number=step, check_interval=False)
            raise EarlyStopped(reason)
        if stopping:
            raise StopRequested
        if replanned:
            raise Replanned

    runner = _runner_class()(
        distribution_strategy=strategy,
        task=task,
        mode="train",
        params=experiment,
        model_dir=str(run.path),
        train_actions=[on_loop],
    )
    holder["runner"] = runner
    start = global_step()
    if getattr(task, "restored", None) is not None:
        from tfod.train.report import print_restore

        run.update(initialized_from=task.restored)
        print_restore(console, task.restored)
    sessions = run.read().get("sessions", [])
    if sessions:
        sessions[-1]["start_step"] = start
        run.update(sessions=sessions)
    if start >= plan.steps:
        console.print(f"Run already at step {start} of {plan.steps}; nothing to train.")
        return start, next(iter(run.metrics()[-1:]), None)
    if start:
        console.print(f"Resuming from step {start}.")
    if plan.time_budget is not None:
        schedule = budget.LiveSchedule(runner.trainer.optimizer, strategy)
    ranges = qat.fitted_ranges(qat.range_decay(plan.steps)) if config.qat else nullcontext()
    with bar, ranges:
        bar.start(start)
        while True:
            try:
                runner.run()
            except Replanned:
                continue
            break
    return global_step(), last_eval


def _peer_lost(err: BaseException) -> bool:
    """A collective failed because another worker died or stopped answering."""
    names = ("UnavailableError", "DeadlineExceededError", "AbortedError", "CancelledError")
    return type(err).__name__ in names or "Collective ops is aborted" in str(err)


def _peer_lost_error(run: RunDir, err: BaseException) -> TfodError:
    checkpoints = run.checkpoints() if run.exists() else {}
    resume = f"step {max(checkpoints)}" if checkpoints else "the start"
    first = str(getattr(err, "message", err)).strip().splitlines()
    return TfodError(
        "a worker of the cluster stopped (died, was killed or lost the network), so every worker "
        f"stops: synchronous training needs them all. Start the same command on every worker "
        f"again to resume from the last checkpoint ({resume}). TensorFlow said: "
        f"{first[0][:300] if first else type(err).__name__}",
        run.path,
    )


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


def _any_worker(strategy: Any, flag: bool) -> bool:
    """True on every worker when `flag` is true on any of them (a cross-worker all-reduce, so
    every worker must call it at the same point)."""
    import tensorflow as tf

    return bool(_sum_over_workers(strategy)(tf.constant(float(flag))).numpy() > 0)


@functools.cache
def _sum_over_workers(strategy: Any) -> Any:
    import tensorflow as tf

    @tf.function  # type: ignore[untyped-decorator]
    def total(value: Any) -> Any:
        per_replica = strategy.run(tf.identity, args=(value,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return total


def _evaluate_inline(
    holder: dict[str, Any], run: RunDir, experiment: Any, task: Any, step: int, bar: _ProgressBar
) -> dict[str, Any]:
    from tfod.evaluate.evaluator import RunEvaluator

    if "evaluator" not in holder:
        holder["evaluator"] = RunEvaluator(run, experiment, task, holder["runner"].trainer.model)
    evaluator = holder["evaluator"]
    _, prefix = run.checkpoint(str(step))
    optimizer = holder["runner"].trainer.optimizer
    with ema.swapped_in(optimizer) if uses_ema(experiment) else nullcontext():
        row: dict[str, Any] = evaluator.evaluate(step, prefix, restore=False)
    m = row["metrics"]
    best = " [green](best)[/green]" if row.get("is_best") else ""
    bar.log(f"step {step}: AP {m['AP']:.3f}  AP50 {m['AP50']:.3f}  AP75 {m['AP75']:.3f}{best}")
    return row


class _ProgressBar:
    """Step, steps/s, loss and ETA; silent when disabled.

    On a terminal, a live bar. Without one (`docker compose logs`, CI, a file), a plain line every
    TFOD_PROGRESS_SECONDS (default 30) seconds and at the last step.
    """

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.plain = enabled and not console.is_terminal
        self.every = float(os.environ.get("TFOD_PROGRESS_SECONDS", "30"))
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("loss {task.fields[loss]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
        )
        self._task: Any = None
        self._started = 0.0
        self._first_step = 0
        self._printed = 0.0

    def __enter__(self) -> _ProgressBar:
        if self.enabled and not self.plain:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and not self.plain:
            self._progress.stop()

    def start(self, step: int) -> None:
        self._first_step, self._started = step, time.monotonic()
        self._printed = self._started
        if self.plain:
            console.print(f"train: step {step}/{self.total}, tracing the graph...")
        elif self.enabled:
            self._task = self._progress.add_task(
                "train", total=self.total, completed=step, rate="tracing the graph...", loss="-"
            )

    def update(self, step: int, loss: float) -> None:
        if not self.enabled:
            return
        clock = time.monotonic()
        elapsed = clock - self._started
        rate = (step - self._first_step) / elapsed if elapsed > 0 else 0.0
        if not self.plain:
            self._progress.update(
                self._task, completed=step, rate=f"{rate:.2f} steps/s", loss=f"{loss:.3f}"
            )
            return
        if clock - self._printed < self.every and step < self.total:
            return
        self._printed = clock
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        console.print(
            f"train: step {step}/{self.total} ({100 * step / self.total:.0f}%), loss {loss:.3f}, "
            f"{rate:.2f} steps/s, elapsed {_clock(elapsed)}, eta {_clock(eta)}"
        )

    def log(self, message: str) -> None:
        (self._progress.console if self.enabled else console).print(message)


def _clock(seconds: float) -> str:
    if seconds != seconds:  # nan: no rate yet
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
