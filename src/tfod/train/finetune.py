"""Starting from a checkpoint: Model Garden's or another tfod run's, restoring the chosen modules.

Model Garden's own `RetinaNetTask.initialize` reads `Checkpoint(backbone=...)` from the root of
the file. Its trainer's checkpoints have the modules there, but a checkpoint saved as
`Checkpoint(model=...)` (a custom loop, a Keras script, another codebase) keeps them under `model/`,
and Model Garden stops with "Found 260 Python objects that were not bound to checkpointed values,
likely due to changes in the Python program" — naming neither what it looked for nor what the file
holds (the Object Detection API's version of this trap reads "Variable ... is not available in
checkpoint"). Its `all` mode also fails on a head trained for another number of classes. Here
both layouts are detected and restored, such a head is re-initialised, and a checkpoint that
provides none of the requested modules is an error naming what was expected and what exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfod.errors import TfodError, describe
from tfod.runs.rundir import RunDir

MODULES_ALL = ("backbone", "decoder", "head")


@dataclass(frozen=True)
class RestorePlan:
    """What will be restored from where."""

    checkpoint: str
    prefix: str  # "" when the modules sit at the root (Model Garden's trainer), else "model/"
    modules: tuple[str, ...]
    skipped_head: bool


def resolve_checkpoint(path: str) -> str:
    """A checkpoint prefix from `zoo:NAME` or a URL (downloaded into the cache once), a run folder
    (its best, else latest), a folder or a prefix."""
    import tensorflow as tf

    from tfod.zoo.cache import fetch, is_remote

    if is_remote(path):
        return str(fetch(path).prefix)
    candidate = Path(path)
    run = RunDir(candidate)
    if run.exists():
        for which in ("best", "latest"):
            try:
                return str(run.checkpoint(which)[1])
            except TfodError:
                continue
        raise TfodError("this run has no checkpoint to start from", candidate)
    if candidate.is_dir():
        latest = tf.train.latest_checkpoint(str(candidate))
        if latest is None:
            raise TfodError("folder holds no checkpoint (no `checkpoint` state file)", candidate)
        return str(latest)
    if Path(f"{path}.index").is_file():
        return path
    if "://" in path:
        raise TfodError("only zoo:NAME, https://, http:// and gs:// checkpoints are fetched", path)
    raise TfodError(
        "checkpoint not found: give a checkpoint prefix (ckpt-N, with ckpt-N.index beside it), "
        "a folder holding checkpoints, a tfod run folder or a zoo:NAME",
        path,
    )


def provenance(reference: str) -> dict[str, Any]:
    """For run.json: the URL and sha256 a zoo name or URL was fetched from (else nothing)."""
    from tfod.zoo.cache import is_remote, read_manifest

    manifest = read_manifest(reference) if is_remote(reference) else None
    if manifest is None:
        return {}
    fields = ("reference", "url", "sha256", "bytes")
    return {"source": {field: manifest[field] for field in fields}}


def plan_restore(
    checkpoint: str, modules: str | list[str], classifier_size: int | None
) -> RestorePlan:
    """Check that `checkpoint` holds the `modules` and decide how to read them.

    Args:
        checkpoint: prefix, folder or run folder.
        modules: "all" or a list of "backbone" / "decoder".
        classifier_size: outputs per location of the new model's classifier (classes with
            background x anchors); a head of another size is re-initialised, not restored.

    Raises:
        TfodError: missing checkpoint, or none of the requested modules in it.
    """
    import tensorflow as tf

    path = resolve_checkpoint(checkpoint)
    try:
        names = [name for name, _ in tf.train.list_variables(path)]
    except tf.errors.OpError as err:
        raise _unreadable(path, err) from None
    wanted = list(MODULES_ALL) if modules == "all" else list(modules)
    for prefix in ("", "model/"):
        present = [m for m in wanted if any(n.startswith(f"{prefix}{m}/") for n in names)]
        if present:
            break
    else:
        tops = sorted(
            {
                n.split("/")[0] + ("/" + n.split("/")[1] if n.startswith("model/") else "")
                for n in names
            }
        )
        raise TfodError(
            f"none of the requested modules ({', '.join(wanted)}) is in this checkpoint: expected "
            f"variables under {' or '.join(repr(p + wanted[0] + '/') for p in ('', 'model/'))}; "
            f"it has {', '.join(tops[:12]) or 'no variables'}. Check model.init_checkpoint and "
            "model.init_modules.",
            path,
        )
    skipped_head = False
    head_size = _classifier_size(path, prefix, names) if "head" in present else None
    if classifier_size is not None and head_size not in (None, classifier_size):
        present.remove("head")
        skipped_head = True
    missing = [m for m in wanted if m not in present and not (m == "head" and skipped_head)]
    if missing:
        raise TfodError(
            f"the checkpoint lacks {', '.join(missing)} (it has {', '.join(present)}); "
            f"choose model.init_modules among what it has",
            path,
        )
    return RestorePlan(path, prefix, tuple(present), skipped_head)


def classifier_size(task_config: Any) -> int:
    """Outputs per location of the classifier of the model `task_config` builds."""
    anchor = task_config.model.anchor
    return int(task_config.model.num_classes * anchor.num_scales * len(anchor.aspect_ratios))


def check_fits(checkpoint: str, preset: str, restores: str) -> dict[str, dict[str, Any]]:
    """Restore `checkpoint` into a model of `preset` with COCO's classes, as a fine-tune from it
    would: the backbone, and for a "detector" checkpoint the decoder and head too (a head for
    another number of classes is re-initialised).

    Returns:
        The restore report.

    Raises:
        TfodError: a module is missing from the checkpoint or does not fit the preset's.
    """
    from official.vision.tasks import retinanet

    from tfod.config.experiment import build_experiment, make_plan
    from tfod.config.schema import TfodConfig
    from tfod.config.template import COCO_CLASSES

    config = TfodConfig.model_validate(
        {"name": "zoo-add", "data": {"dir": "."}, "model": {"preset": preset}}
    )
    summary = {"classes": [{"id": i} for i in range(1, COCO_CLASSES + 1)], "splits": {}}
    experiment = build_experiment(config, make_plan(config, summary, batch_size=8, steps=1000))
    model = retinanet.RetinaNetTask(experiment.task).build_model()  # restored below
    modules = list(MODULES_ALL) if restores == "detector" else ["backbone"]
    plan = plan_restore(checkpoint, modules, classifier_size(experiment.task))
    return restore(model, plan)


def restore(model: Any, plan: RestorePlan) -> dict[str, dict[str, Any]]:
    """Restore `plan.modules` of `model` from the checkpoint, every variable of them or none.

    Returns:
        The restore report: per module (backbone, decoder, head) its variables and whether they
        were restored, re-initialised or not asked for, and why.

    Raises:
        TfodError: the checkpoint does not fit the preset's modules (a variable missing from it, or
            of another shape): the model would start partly random.
    """
    import tensorflow as tf

    items = {m: getattr(model, m) for m in plan.modules if getattr(model, m, None) is not None}
    root = (
        tf.train.Checkpoint(model=tf.train.Checkpoint(**items))
        if plan.prefix
        else tf.train.Checkpoint(**items)
    )
    try:
        status = root.read(plan.checkpoint)
        status.expect_partial().assert_existing_objects_matched().assert_nontrivial_match()
    except (tf.errors.NotFoundError, tf.errors.DataLossError) as err:
        raise _unreadable(plan.checkpoint, err) from None
    except (AssertionError, ValueError, tf.errors.OpError) as err:
        detail = " ".join(str(err).split())[:600]
        raise TfodError(
            f"the checkpoint does not fit this preset's {', '.join(items)} (the model would start "
            f"partly random): {detail}. Choose the preset the checkpoint was trained with "
            "(`tfod zoo list` names it) or fewer model.init_modules.",
            plan.checkpoint,
        ) from None
    report: dict[str, dict[str, Any]] = {}
    for module in MODULES_ALL:
        layer = getattr(model, module, None)
        count = len(layer.variables) if layer is not None else 0
        if module in items:
            report[module] = {"variables": count, "action": "restored"}
        elif module == "head" and plan.skipped_head:
            report[module] = {
                "variables": count,
                "action": "re-initialised",
                "why": "the checkpoint's classifier is for another number of classes",
            }
        else:
            new_head = " (a new head for this dataset's classes)" if module == "head" else ""
            report[module] = {
                "variables": count,
                "action": "random init",
                "why": f"not in model.init_modules{new_head}",
            }
    return report


def _unreadable(checkpoint: str, err: Exception) -> TfodError:
    """The error for a checkpoint whose files cannot be read: a damaged download when it came
    from the zoo cache (marked so), else the user's own files."""
    from tfod.zoo.cache import damaged_advice

    why = f"its files cannot be read ({describe(err)})"
    advice = damaged_advice(checkpoint, why)
    return TfodError(f"{why}: {advice or 'check the checkpoint files'}", checkpoint)


def _classifier_size(path: str, prefix: str, names: list[str]) -> int | None:
    """Outputs per location of the checkpoint's RetinaNet classifier, if it has one."""
    import tensorflow as tf

    for name in names:
        if (
            name.startswith(f"{prefix}head/")
            and "classifier" in name
            and name.endswith("bias/.ATTRIBUTES/VARIABLE_VALUE")
        ):
            return int(tf.train.load_variable(path, name).shape[-1])
    return None
