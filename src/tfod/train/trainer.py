"""`tfod train`: Model Garden's own trainer (`official.core.train_lib`) with what users miss.

tfod adds: pre-flight checks, a run folder with run.json, a progress bar (step, steps/s, loss,
ETA) over a quiet terminal (the raw log goes to RUN/train.log), a clean stop on Ctrl-C or SIGTERM
(checkpoint saved, status recorded; the same command resumes), robust fine-tuning, and COCO
evaluation beside training (inline, or by a separate `tfod eval --watch`).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tfod import atomic
from tfod.config.experiment import Plan, build_experiment, make_plan
from tfod.config.presets import get_preset
from tfod.config.schema import TfodConfig, dump_config, parse_duration
from tfod.console import console, log_tail, native_output_to
from tfod.data.dataset import load_summary
from tfod.errors import TfodError, describe
from tfod.runs.rundir import (
    CONFIG_COPY,
    FINISHED,
    PARENT,
    RunDir,
    copy_checkpoint,
    git_revision,
    now,
    versions,
)
from tfod.train import batch_size as batch_size_search
from tfod.train import qat
from tfod.train.cluster import any_worker, make_strategy, read_tf_config, resolve
from tfod.train.early_stop import EarlyStopped
from tfod.train.loop import Job, StopRequested, TrainingLoop
from tfod.train.preflight import raise_on_errors, run_checks


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
    job = Job(placement, strategy, started)
    if not placement.is_chief:
        return _train_worker(config, summary, run, steps, batch_size, job)
    with run.lock():
        result = _train_locked(config, summary, run, steps, batch_size, inline_eval, progress, job)
    if job.strategy is not None:
        any_worker(
            job.strategy, False
        )  # the workers wait for the chief's last writes, then all exit
    return result


def _train_worker(
    config: TfodConfig,
    summary: dict[str, Any],
    chief_run: RunDir,
    steps: int | None,
    batch_size: int | None,
    job: Job,
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
                loop = TrainingLoop(config, plan, experiment, run, stop, job, summary, False, False)
                step, _ = loop.train()
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
    any_worker(job.strategy, False)  # wait for the chief to finish writing the run
    return TrainResult(chief_run, status, step, None)


def _train_locked(
    config: TfodConfig,
    summary: dict[str, Any],
    run: RunDir,
    steps: int | None,
    batch_size: int | None,
    inline_eval: bool,
    progress: bool,
    job: Job,
) -> TrainResult:
    plan, batch_search, fitted = _plan_run(config, summary, run, steps, batch_size)
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
    run.write_experiment(experiment)
    record = {"qat": qat_state} if qat_state else {}
    if batch_search:
        record["batch_search"] = batch_search.as_dict()
    sessions = _record_start(run, config, plan, inline_eval, job, **record)
    _announce(run, config, plan, experiment, calibrate, job, qat_state)
    status, step, last_eval = "failed", 0, None
    try:
        step, last_eval = _train_recovering(
            config, plan, experiment, run, job, summary, inline_eval, progress, calibrate
        )
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
        sessions = run.read().get("sessions") or sessions  # the loop added its start step
        sessions[-1].update(ended=now(), status=status)
        try:
            run.update(status=status, sessions=sessions, **({"step": step} if step else {}))
        except OSError as err:  # a full disk: the error being raised says what to do
            console.print(f"[yellow]warning[/yellow]: could not record the run's status: {err}")
    _plot(run)
    return TrainResult(run, status, step, last_eval)


def _plan_run(
    config: TfodConfig,
    summary: dict[str, Any],
    run: RunDir,
    steps: int | None,
    batch_size: int | None,
) -> tuple[Plan, Any, dict[str, Any] | None]:
    """(the plan, the batch-size search if one ran, a resumed timed run's fitted fields)."""
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
    return plan, batch_search, fitted


def _record_start(
    run: RunDir, config: TfodConfig, plan: Plan, inline_eval: bool, job: Job, **record: Any
) -> list[dict[str, Any]]:
    """run.json at the start of a session; returns its sessions, this one last."""
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
        **record,
    )
    return sessions


def _announce(
    run: RunDir,
    config: TfodConfig,
    plan: Plan,
    experiment: Any,
    calibrate: bool,
    job: Job,
    qat_state: dict[str, Any] | None,
) -> None:
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


def _train_recovering(
    config: TfodConfig,
    plan: Plan,
    experiment: Any,
    run: RunDir,
    job: Job,
    summary: dict[str, Any],
    inline_eval: bool,
    progress: bool,
    calibrate: bool,
) -> tuple[int, dict[str, Any] | None]:
    """The training loop, again at half the batch after an out-of-memory error; a full disk or a
    lost peer becomes one clear error."""
    while True:
        try:
            with native_output_to(run.path / "train.log"), _stop_signals() as stop:
                loop = TrainingLoop(
                    config, plan, experiment, run, stop, job, summary,
                    inline_eval, progress, calibrate,
                )  # fmt: skip
                return loop.train()
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
    rates = 1.0 if get_preset(plan.preset).summed_loss else new / old  # linear scaling rule
    new_plan = dataclasses.replace(
        plan,
        batch_size=new,
        learning_rate=plan.learning_rate * rates,
        linear_rule_learning_rate=plan.linear_rule_learning_rate * rates,
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
    run.write_experiment(new_experiment)
    console.print(
        f"[yellow]Out of memory at batch {old} (step {at_step}): resuming from step {resumed_from} "
        f"with batch {new} and learning rate {new_plan.learning_rate:.4g}.[/yellow]"
    )
    return new_plan, new_experiment


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
