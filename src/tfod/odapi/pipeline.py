"""`tfod import pipeline`: an Object Detection API pipeline.config -> a commented tfod.yaml.

The file is parsed with the API's own field names (`tfod/protos/pipeline.proto`, a subset of its
protos). Every field set in the file becomes one row of a table: *mapped* (it has a tfod
equivalent), *approximated* (the nearest tfod setting, and why), *unsupported* (no equivalent,
and why) or *to do* (a placeholder or a path that must be given). Fields the subset does not
declare are skipped by the parser, recorded with their line, and get a row too: nothing is
dropped silently.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import text_format

from tfod import atomic
from tfod.config.experiment import merge
from tfod.config.presets import SPINENET_QAT_OVERRIDE, Preset, get_preset, qat_presets
from tfod.config.schema import parse_config
from tfod.errors import TfodError
from tfod.protos import pipeline_pb2
from tfod.textfile import read_text

MAPPED, APPROXIMATED, UNSUPPORTED, TO_DO = "mapped", "approximated", "unsupported", "to do"
PLACEHOLDER = "PATH_TO_BE_CONFIGURED"
SECTIONS = (
    "model",
    "train_config",
    "train_input_reader",
    "eval_config",
    "eval_input_reader",
    "graph_rewriter",
)

# Preset families: the API's feature extractors -> tfod presets (nearest input size wins).
MOBILE = ("retinanet-mobilenetv2-256", "retinanet-mobilenetv2-320", "retinanet-mobilenetv2-ssd-256")
RESNET = ("retinanet-resnet50-fpn-640",)
SPINENET = ("retinanet-spinenet49-mobile-384",)

OPTIMIZER = ("trainer", "optimizer_config")


@dataclass(frozen=True)
class Row:
    """One field of the pipeline.config and what it became."""

    field: str
    value: str
    status: str
    became: str
    why: str


@dataclass(frozen=True)
class Unknown:
    """A field the parser skipped: not declared in tfod's subset of the API's protos."""

    path: str
    value: str
    line: int


@dataclass
class PipelineImport:
    """What `import_pipeline` made: the rows, the tfod.yaml text and the commands to run next."""

    rows: list[Row]
    yaml_text: str
    name: str
    data_dir: Path
    dataset: dict[str, Any] | None
    next_steps: list[str] = field(default_factory=list)


# Fields tfod's subset does not declare, by path pattern: what tfod does instead.
NOT_MODELLED: list[tuple[str, str, str]] = [
    (r"model\.(faster_rcnn|center_net|experimental_model)\.", UNSUPPORTED,
     "part of a model tfod does not train (see the model row)"),
    (r"model\.ssd\.feature_extractor\.conv_hyperparams", APPROXIMATED,
     "the preset's: batch norm with train.norm_momentum (auto: fitted to the run length), "
     "Model Garden's L2 weight decay, ReLU6 for MobileNet"),
    (r"model\.ssd\.feature_extractor\.", APPROXIMATED,
     "the preset's backbone builds its own layers (padding, extra layers)"),
    (r"model\.ssd\.box_predictor", APPROXIMATED,
     "the preset's RetinaNet head: convolutions shared across pyramid levels"),
    (r"model\.ssd\.(box_coder|matcher|similarity_calculator)", APPROXIMATED,
     "RetinaNet's: IoU matching (positive at 0.5), Faster R-CNN box encoding"),
    (r"model\.ssd\.loss", APPROXIMATED,
     "RetinaNet's focal loss and Huber box loss; hard example mining has no equivalent"),
    (r"model\.ssd\.post_processing", APPROXIMATED,
     "Model Garden's detection generator (overrides task.model.detection_generator); the "
     "TFLite export uses per-class NMS"),
    (r"model\.ssd\.anchor_generator\.", APPROXIMATED,
     "RetinaNet anchors: anchor_size x stride at every level (task.model.anchor)"),
    (r"model\.ssd\.", APPROXIMATED, "Model Garden's RetinaNet handles this itself"),
    (r"train_config\.data_augmentation_options\[\d+\]\.(random_adjust_\w+|random_distort_color"
     r"|random_rgb_to_gray|random_pixel_value_scale)", UNSUPPORTED,
     "tfod has no colour augmentation (train.augment: hflip, scale_jitter)"),
    (r"train_config\.data_augmentation_options\[\d+\]\.(ssd_random_crop\w*|random_crop\w*"
     r"|random_pad_image|random_scale_crop_and_pad_to_square|random_absolute_pad_image)",
     APPROXIMATED, "tfod's scale_jitter: random scale 0.8-1.2, then crop or pad to the input"),
    (r"train_config\.data_augmentation_options\[\d+\]\.normalize_image", APPROXIMATED,
     "Model Garden normalises the input itself"),
    (r"train_config\.data_augmentation_options", UNSUPPORTED,
     "no equivalent in tfod's augmentations (train.augment: hflip, scale_jitter)"),
    (r"train_config\.(sync_replicas|replicas_to_aggregate|startup_delay_steps)", APPROXIMATED,
     "Model Garden's distribution strategy is synchronous"),
    (r"train_config\.fine_tune_checkpoint_version|train_config\.load_all_detection", APPROXIMATED,
     "see the fine_tune_checkpoint row"),
    (r"train_config\.(max_number_of_boxes|unpad_groundtruth_tensors)", APPROXIMATED,
     "Model Garden pads to 100 boxes per image (task.train_data.parser.max_num_instances)"),
    (r"train_config\.keep_checkpoint_every_n_hours", APPROXIMATED,
     "tfod keeps the 5 newest checkpoints and the best one in best/"),
    (r"train_config\.use_bfloat16", UNSUPPORTED, "tfod trains in float32"),
    (r"train_config\.(freeze_variables|update_trainable_variables)", UNSUPPORTED,
     "tfod trains every variable (model.init_modules chooses what is restored, not frozen)"),
    (r"train_config\.", UNSUPPORTED, "no tfod equivalent"),
    (r"(train|eval)_input_reader(\[\d+\])?\.(sample_1_of_n_examples|num_examples)", UNSUPPORTED,
     "tfod evaluates every validation image"),
    (r"(train|eval)_input_reader(\[\d+\])?\.", APPROXIMATED,
     "Model Garden's input pipeline: training data shuffled and repeated, evaluation data read "
     "once in order"),
    (r"eval_config\.(num_visualizations|visualization_export_dir|min_score_threshold"
     r"|max_num_boxes_to_visualize|visualize_groundtruth_boxes|skip_\w+)", APPROXIMATED,
     "`tfod runs show` and TensorBoard show predictions on validation images"),
    (r"eval_config\.eval_interval_secs", APPROXIMATED,
     "eval.every_steps (default: 10 evaluations per run)"),
    (r"eval_config\.use_moving_averages", UNSUPPORTED, "tfod evaluates the trained weights"),
    (r"eval_config\.", UNSUPPORTED, "no tfod equivalent"),
]  # fmt: skip


class _RecordingParser(text_format._Parser):  # protobuf has no public hook for unknown fields
    """protobuf's text parser (Merge semantics, as the API reads configs) that records every
    field it skips as unknown, with its path, value and line."""

    def __init__(self) -> None:
        super().__init__(allow_unknown_field=True)
        self.path: list[str] = []
        self.unknown: list[Unknown] = []
        self._depth = 0
        self._values: list[str] = []

    def _MergeMessageField(self, tokenizer: Any, message: Any, field: Any) -> None:  # noqa: N802
        name = field.name
        if field.is_repeated:
            name += f"[{len(getattr(message, field.name))}]"
        self.path.append(name)
        try:
            super()._MergeMessageField(tokenizer, message, field)  # type: ignore[misc]
        finally:
            self.path.pop()

    def _SkipFieldContents(self, tokenizer: Any, field_name: str, message_type: Any) -> None:  # noqa: N802
        if self._depth:
            super()._SkipFieldContents(tokenizer, field_name, message_type)  # type: ignore[misc]
            return
        line = int(getattr(tokenizer, "_line", -1)) + 1
        self._depth, self._values = 1, []
        try:
            super()._SkipFieldContents(tokenizer, field_name, message_type)  # type: ignore[misc]
        finally:
            self._depth = 0
        value = ", ".join(self._values) if self._values else "{...}"
        if len(self._values) > 1:
            value = f"[{value}]"
        self.unknown.append(Unknown(".".join([*self.path, field_name]), value, line))

    def _SkipFieldValue(self, tokenizer: Any) -> None:  # noqa: N802
        if self._depth == 1:
            self._values.append(tokenizer.token)
        super()._SkipFieldValue(tokenizer)  # type: ignore[misc]

    def _SkipFieldMessage(self, tokenizer: Any, message_type: Any) -> None:  # noqa: N802
        self._depth += 1
        try:
            super()._SkipFieldMessage(tokenizer, message_type)  # type: ignore[misc]
        finally:
            self._depth -= 1


def parse_pipeline(path: Path) -> tuple[Any, list[Unknown]]:
    """The TrainEvalPipelineConfig in `path` and the fields tfod's subset does not declare.

    Raises:
        TfodError: unreadable, or not text-format protobuf (the line and column are named).
    """
    text = read_text(path, "pipeline.config")
    config = pipeline_pb2.TrainEvalPipelineConfig()
    parser = _RecordingParser()
    try:
        parser.MergeLines(text.split("\n"), config)
    except text_format.ParseError as err:
        raise TfodError(f"not a valid pipeline.config: {err}", path) from err
    except RecursionError:
        raise TfodError(
            "not a valid pipeline.config: its braces nest thousands deep (a real one nests "
            "about ten)",
            path,
        ) from None
    return config, parser.unknown


def leaves(message: Any, prefix: str = "") -> dict[str, str]:
    """Every field set in `message`, path -> value as the file writes it (an empty message: {})."""
    out: dict[str, str] = {}
    for descriptor, value in message.ListFields():
        name = prefix + descriptor.name
        if descriptor.message_type is not None:
            items = list(value) if descriptor.is_repeated else [value]
            for index, item in enumerate(items):
                path = f"{name}[{index}]" if descriptor.is_repeated else name
                out.update(leaves(item, path + ".") or {path: "{}"})
        elif descriptor.is_repeated:
            out[name] = "[" + ", ".join(_scalar(descriptor, v) for v in value) + "]"
        else:
            out[name] = _scalar(descriptor, value)
    return out


def _scalar(descriptor: Any, value: Any) -> str:
    if descriptor.enum_type is not None:
        return str(descriptor.enum_type.values_by_number[value].name)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


class _Mapper:
    """Turns a parsed config into tfod.yaml fields, one row per field of the file."""

    def __init__(self, config: Any, unknown: list[Unknown]) -> None:
        self.config = config
        self.unknown = unknown
        self.leaves = leaves(config)
        self.rows: list[Row] = []
        self.claimed: set[str] = set()
        self.yaml: dict[str, dict[str, Any]] = {"model": {}, "train": {}, "eval": {}}
        self.comments: dict[tuple[str, str], str] = {}
        self.overrides: dict[str, Any] = {}
        self.qat_steps: int | None = None
        self.classes: int | None = None
        # The record files per split and the label map, when every path the file names exists.
        self.records: dict[str, list[Path]] | None = {"train": [], "val": []}
        self.label_map: Path | None = None

    # -- bookkeeping ----------------------------------------------------------------------------

    def under(self, prefix: str) -> list[str]:
        return [
            p
            for p in self.leaves
            if p not in self.claimed
            and (p == prefix or p.startswith(prefix + ".") or p.startswith(prefix + "["))
        ]

    def has(self, prefix: str) -> bool:
        return bool(self.under(prefix))

    def claim(self, prefix: str, status: str, became: str, why: str = "") -> None:
        """One row for the fields set under `prefix` (none set: no row)."""
        paths = self.under(prefix)
        if not paths:
            return
        self.claimed.update(paths)
        parts = [
            self.leaves[p] if p == prefix else f"{p[len(prefix) + 1 :]}: {self.leaves[p]}"
            for p in paths
        ]
        self.rows.append(Row(prefix, ", ".join(parts), status, became, why))

    def set(self, section: str, key: str, value: Any, comment: str = "") -> str:
        self.yaml[section][key] = value
        if comment:
            self.comments[(section, key)] = comment
        return f"{section}.{key}: {_flow(value)}"

    def override(self, path: tuple[str, ...], value: Any) -> str:
        node = self.overrides
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        return f"overrides.{'.'.join(path)}: {_flow(value)}"

    def finish(self) -> list[Row]:
        skipped = [u.path for u in self.unknown]
        for path in self.leaves:
            holds_unknown = any(u.startswith(path + ".") for u in skipped)
            if path not in self.claimed and not holds_unknown:
                self.rows.append(
                    Row(path, self.leaves[path], UNSUPPORTED, "", "no tfod equivalent")
                )
        for item in self.unknown:
            status, why = UNSUPPORTED, "not modelled by tfod: ignored"
            for pattern, known_status, known_why in NOT_MODELLED:
                if re.match(pattern, item.path):
                    status, why = known_status, known_why
                    break
            self.rows.append(
                Row(item.path, item.value, status, "", f"{why} (line {item.line}, not read)")
            )
        order = {name: i for i, name in enumerate(SECTIONS)}
        return sorted(self.rows, key=lambda r: order.get(re.split(r"[.\[]", r.field)[0], 99))


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def import_pipeline(
    path: Path,
    out: Path,
    data_dir: Path | None = None,
    preset: str | None = None,
    name: str | None = None,
    copy: bool = False,
    paths_from: Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> PipelineImport:
    """Map the pipeline.config `path` onto a tfod.yaml written to `out`, importing its records.

    Args:
        data_dir: the dataset folder to import the records into (default: OUT/../data/NAME).
        preset: use this preset instead of the nearest one.
        copy: copy the records (`tfod data import-tfrecord --copy`) instead of linking them.
        paths_from: the folder relative paths in the file are read from (default: its folder).

    Raises:
        TfodError: unreadable file, `out` exists without `force`, or records that cannot be
            imported as asked.
    """
    if out.exists() and not force:
        raise TfodError("exists; pass --force to overwrite it", out)
    config, unknown = parse_pipeline(path)
    mapper = _Mapper(config, unknown)
    run_name = name or _run_name(path)
    data_dir = data_dir or out.parent / "data" / run_name
    base = paths_from or path.parent
    labels = _map_inputs(mapper, base)
    mapper.classes = len(labels) if labels else None
    _map_model(mapper, preset, mapper.classes)
    _map_train(mapper)
    _map_eval(mapper)
    rows = mapper.finish()

    dataset = None
    next_steps = []
    from tfod.odapi.records import import_records

    records = mapper.records
    if records is not None and records["train"] and records["val"] and mapper.label_map:
        dataset = import_records(
            records["train"], records["val"], mapper.label_map, data_dir, copy, progress
        )
    else:
        next_steps.append(
            "tfod data import-tfrecord --train TRAIN_RECORDS --val VAL_RECORDS --label-map "
            f"LABEL_MAP --out {data_dir}   # the records were not found: see the 'to do' rows"
        )
    text = _yaml_text(mapper, rows, path, run_name, data_dir, out)
    parse_config(yaml.safe_load(text), out)  # what we write must satisfy the schema
    atomic.write_text(out, text)
    next_steps += [f"tfod config validate {out}", f"tfod train {out}"]
    run = f"runs/{run_name}"
    if mapper.qat_steps:
        next_steps.append(f"tfod qat {run} --steps {mapper.qat_steps}")
        run += "-qat"
    next_steps.append(f"tfod export {run}")
    return PipelineImport(rows, text, run_name, data_dir, dataset, next_steps)


def _run_name(path: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-._")
    return name or "imported"


# -- inputs -----------------------------------------------------------------------------------


def _resolve(raw: str, base: Path) -> tuple[Path | None, str]:
    """A path of the file -> (the local path, "") or (None, why it cannot be used)."""
    if PLACEHOLDER in raw or not raw:
        return None, (
            f"{PLACEHOLDER} is the API sample configs' placeholder: give the real path"
            if raw
            else "empty path"
        )
    if "://" in raw:
        return None, "a remote path: copy the files to this machine (tfod reads local files)"
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = base / path
    return path, ""


def _map_inputs(mapper: _Mapper, base: Path) -> dict[int, str] | None:
    """Rows for the input readers, the records they name (`mapper.records`, None when a path is
    missing) and the label map's classes when it can be read."""
    config = mapper.config
    labels: dict[int, str] | None = None
    readers = [("train_input_reader", config.train_input_reader)] + [
        (f"eval_input_reader[{i}]", r) for i, r in enumerate(config.eval_input_reader)
    ]
    for prefix, reader in readers:
        if prefix.startswith("eval_input_reader[") and prefix != "eval_input_reader[0]":
            mapper.claim(prefix, UNSUPPORTED, "", "tfod evaluates one validation split: the first")
            continue
        split = "train" if prefix == "train_input_reader" else "val"
        _map_record_paths(mapper, base, prefix, reader, split)
        if mapper.has(f"{prefix}.label_map_path"):
            labels = _map_label_map(mapper, base, prefix, reader) or labels
    return labels


def _map_record_paths(mapper: _Mapper, base: Path, prefix: str, reader: Any, split: str) -> None:
    from tfod.odapi.records import expand

    field_path = f"{prefix}.tf_record_input_reader.input_path"
    mapper.claimed.add(field_path)
    for index, raw in enumerate(reader.tf_record_input_reader.input_path):
        path, problem = _resolve(raw, base)
        status, why = TO_DO, problem
        if path is not None:
            try:
                files = expand([str(path)], split)
                status, why = MAPPED, f"{len(files)} file(s) found"
                if mapper.records is not None:
                    mapper.records[split] += files
            except TfodError:
                why = f"no file matches {path}" + _relative_hint(raw, base)
        if status == TO_DO:
            mapper.records = None
        mapper.rows.append(
            Row(f"{field_path}[{index}]", f'"{raw}"', status, f"data.dir ({split} split)", why)
        )


def _map_label_map(mapper: _Mapper, base: Path, prefix: str, reader: Any) -> dict[int, str] | None:
    """The reader's label map row; its classes when it is the training reader's and readable."""
    from tfod.data.labelmap import read_label_map

    label_field = f"{prefix}.label_map_path"
    raw = reader.label_map_path
    path, problem = _resolve(raw, base)
    target = "data.dir/label_map.pbtxt"
    if path is None:
        mapper.claim(label_field, TO_DO, target, problem)
    elif not path.is_file():
        mapper.claim(label_field, TO_DO, target, f"not found: {path}" + _relative_hint(raw, base))
    elif prefix != "train_input_reader":
        same = raw == mapper.config.train_input_reader.label_map_path
        mapper.claim(
            label_field,
            MAPPED if same else APPROXIMATED,
            target,
            "" if same else "tfod uses one label map for both splits: the training one",
        )
    else:
        labels = read_label_map(path)
        mapper.label_map = path
        mapper.claim(
            label_field, MAPPED, target, f"{len(labels)} classes: {', '.join(labels.values())}"
        )
        return labels
    return None


def _relative_hint(raw: str, base: Path) -> str:
    if Path(raw).expanduser().is_absolute():
        return ""
    return (
        f" (relative paths are read from {base}; the API read them from the folder it ran in: "
        "pass --paths-from that folder)"
    )


# -- model ------------------------------------------------------------------------------------


def _map_model(mapper: _Mapper, chosen: str | None, classes: int | None) -> None:
    config = mapper.config
    kind = config.model.WhichOneof("model")
    qat = config.HasField("graph_rewriter") and config.graph_rewriter.HasField("quantization")
    fine_tune = bool(config.train_config.fine_tune_checkpoint)
    if kind == "ssd":
        model = config.model.ssd
        extractor = model.feature_extractor.type
        family = _family(extractor)
    elif kind == "faster_rcnn":
        model = config.model.faster_rcnn
        extractor = model.feature_extractor.type
        family = _family(extractor) if "mobilenet" in extractor else RESNET
    else:
        model, extractor, family = None, "", MOBILE
    size = _input_size(model) if model is not None else None
    preset_name = chosen or _nearest(family, size, qat, fine_tune)
    preset = get_preset(preset_name)
    given = f" (--preset {chosen})" if chosen else ""
    source = f"model.{kind} {extractor}".strip() if kind else "no model in the file"
    mapper.set("model", "preset", preset.name, f"from {source}{given}")

    prefix = f"model.{kind}"
    if kind in ("faster_rcnn", "center_net", "experimental_model"):
        what = {"faster_rcnn": "two-stage detectors (Faster R-CNN)", "center_net": "CenterNet"}
        why = (
            f"not supported: tfod trains one-stage RetinaNets; {what.get(kind, 'this model')} "
            f"cannot be imported. The nearest tfod preset is {preset.name}{given}: "
            f"{preset.description}. The tfod.yaml uses it."
        )
        mapper.claim(
            f"{prefix}.feature_extractor.type", UNSUPPORTED, f"model.preset: {preset.name}", why
        )
    elif kind == "ssd":
        _map_ssd(mapper, preset, family, extractor, chosen, qat, fine_tune)
    if model is not None:
        _map_num_classes(mapper, f"{prefix}.num_classes", model.num_classes, classes)
        _map_resizer(mapper, f"{prefix}.image_resizer", model.image_resizer, size, preset)
    if kind != "ssd":
        mapper.claim(
            prefix, UNSUPPORTED, "", "part of a model tfod does not train (see the model row)"
        )
    if qat and preset.name.startswith(SPINENET[0]):
        mapper.overrides = merge(mapper.overrides, SPINENET_QAT_OVERRIDE)


def _map_ssd(
    mapper: _Mapper,
    preset: Preset,
    family: tuple[str, ...],
    extractor: str,
    chosen: str | None,
    qat: bool,
    fine_tune: bool,
) -> None:
    """An SSD (or EfficientDet) model's feature extractor, backbone, pyramid and anchors."""
    prefix = "model.ssd"
    given = f" (--preset {chosen})" if chosen else ""
    status = MAPPED if family != SPINENET and (chosen is None or chosen in family) else APPROXIMATED
    why = {
        MOBILE: "MobileNet SSD -> the MobileNetV2 RetinaNet presets",
        RESNET: "ResNet SSD/RetinaNet -> the ResNet-50 FPN RetinaNet",
        SPINENET: "EfficientDet's BiFPN has no Model Garden RetinaNet equivalent: SpineNet-49 "
        "Mobile is the nearest in size and cost (a learned multi-scale network too)",
    }[family]
    if "mobilenet_v1" in extractor or "mobilenet_v3" in extractor:
        status, why = APPROXIMATED, why + " (MobileNetV2 stands in for this MobileNet)"
    if "fpn" not in extractor and family == MOBILE:
        status, why = APPROXIMATED, why + " (every tfod preset has a feature pyramid)"
    mapper.claim(
        f"{prefix}.feature_extractor.type",
        status,
        f"model.preset: {preset.name}{given}",
        why + _preset_reasons(preset.name, qat, fine_tune, chosen),
    )
    _map_backbone(mapper, prefix, extractor)
    _map_levels(mapper, f"{prefix}.feature_extractor.fpn", preset)
    _map_levels(mapper, f"{prefix}.feature_extractor.bifpn", preset)
    mapper.claim(
        f"{prefix}.feature_extractor.use_depthwise",
        MAPPED if family == MOBILE else APPROXIMATED,
        "",
        "the preset's separable convolutions" if family == MOBILE else "the preset's convolutions",
    )
    mapper.claim(
        f"{prefix}.feature_extractor.min_depth", APPROXIMATED, "", "MobileNetV2's own minimum"
    )
    _map_anchors(mapper, f"{prefix}.anchor_generator", preset)


def _family(extractor: str) -> tuple[str, ...]:
    if "efficientnet" in extractor or "bifpn" in extractor:
        return SPINENET
    if "resnet" in extractor or "inception" in extractor or "nas" in extractor:
        return RESNET
    return MOBILE


def _nearest(family: tuple[str, ...], size: int | None, qat: bool, fine_tune: bool) -> str:
    from tfod.zoo.catalog import ZOO

    candidates = list(family)
    coco_trained = {e.preset for e in ZOO.values() if e.restores == "detector"}
    for wanted in (
        [p for p in candidates if p in qat_presets()] if qat else candidates,
        [p for p in candidates if p in coco_trained] if fine_tune else None,
    ):
        if wanted:
            candidates = wanted
    if size is None:
        return candidates[0]
    return min(candidates, key=lambda p: abs(get_preset(p).input_size - size))


def _preset_reasons(name: str, qat: bool, fine_tune: bool, chosen: str | None) -> str:
    if chosen:
        return ""
    reasons = []
    if qat and name in qat_presets():
        reasons.append("quantization-aware training needs a preset `tfod qat` supports")
    if fine_tune:
        reasons.append("it has a COCO-trained checkpoint in the zoo")
    return "; chosen because " + " and ".join(reasons) if reasons else ""


def _map_backbone(mapper: _Mapper, prefix: str, extractor: str) -> None:
    model = mapper.config.model.ssd
    multiplier = model.feature_extractor.depth_multiplier
    field_path = f"{prefix}.feature_extractor.depth_multiplier"
    if "mobilenet" in extractor and not math.isclose(multiplier, 1.0):
        became = mapper.override(
            ("task", "model", "backbone", "mobilenet", "filter_size_scale"), round(multiplier, 4)
        )
        mapper.claim(field_path, MAPPED, became)
    else:
        mapper.claim(
            field_path,
            MAPPED if math.isclose(multiplier, 1.0) else UNSUPPORTED,
            "",
            "the preset's width" if math.isclose(multiplier, 1.0) else "MobileNet only",
        )
    depth = re.search(r"resnet(?:_v1_)?(\d+)", extractor)
    if depth and depth.group(1) in ("101", "152"):
        became = mapper.override(
            ("task", "model", "backbone", "resnet", "model_id"), int(depth.group(1))
        )
        mapper.rows.append(
            Row(
                f"{prefix}.feature_extractor.type (depth)",
                depth.group(1),
                MAPPED,
                became,
                "Model Garden's ResNet at this depth",
            )
        )


def _map_levels(mapper: _Mapper, prefix: str, preset: Any) -> None:
    if not mapper.has(prefix):
        return
    message = mapper.config.model.ssd.feature_extractor
    _claim_levels(mapper, prefix, message.fpn if prefix.endswith(".fpn") else message.bifpn, preset)
    mapper.claim(prefix, APPROXIMATED, "", "the preset's pyramid width and depth")


def _claim_levels(mapper: _Mapper, prefix: str, message: Any, preset: Any) -> None:
    """Rows for `min_level` and `max_level` of a pyramid or anchor generator."""
    for name in ("min_level", "max_level"):
        same = getattr(message, name) == getattr(preset, name)
        mapper.claim(
            f"{prefix}.{name}",
            MAPPED if same else APPROXIMATED,
            f"{preset.name}: levels {preset.min_level}-{preset.max_level}",
            "" if same else "the preset's pyramid levels",
        )


def _map_anchors(mapper: _Mapper, prefix: str, preset: Any) -> None:
    anchors = mapper.config.model.ssd.anchor_generator
    kind = anchors.WhichOneof("anchor_generator_oneof")
    if kind is None:
        return
    grid, sub = getattr(anchors, kind), f"{prefix}.{kind}"
    multiscale = kind == "multiscale_anchor_generator"
    anchor = ("task", "model", "anchor")
    if grid.aspect_ratios:
        became = mapper.override(
            (*anchor, "aspect_ratios"), [round(r, 4) for r in grid.aspect_ratios]
        )
        why = "" if multiscale else "the same ratios at every pyramid level"
        mapper.claim(f"{sub}.aspect_ratios", MAPPED if multiscale else APPROXIMATED, became, why)
    if multiscale:
        became = mapper.override((*anchor, "num_scales"), grid.scales_per_octave)
        mapper.claim(f"{sub}.scales_per_octave", MAPPED, became)
        became = mapper.override((*anchor, "anchor_size"), round(grid.anchor_scale, 4))
        mapper.claim(f"{sub}.anchor_scale", MAPPED, became)
        _claim_levels(mapper, sub, grid, preset)
    else:
        mapper.claim(
            sub,
            APPROXIMATED,
            "",
            "RetinaNet sizes anchors per level (anchor_size x stride) instead of SSD's min/max scale",
        )


def _map_num_classes(
    mapper: _Mapper, field_path: str, num_classes: int, classes: int | None
) -> None:
    if classes is None:
        why = "tfod takes the classes from the dataset's label map"
        mapper.claim(field_path, MAPPED, "the dataset's label map", why)
    elif classes == num_classes:
        mapper.claim(
            field_path, MAPPED, "the dataset's label map", f"{classes} classes in the label map"
        )
    else:
        why = f"the label map has {classes} classes and tfod trains those (the file says {num_classes})"
        mapper.claim(field_path, APPROXIMATED, "the dataset's label map", why)


def _input_size(model: Any) -> int | None:
    resizer = model.image_resizer
    if resizer.HasField("fixed_shape_resizer"):
        return int(max(resizer.fixed_shape_resizer.height, resizer.fixed_shape_resizer.width))
    if resizer.HasField("keep_aspect_ratio_resizer"):
        return int(resizer.keep_aspect_ratio_resizer.max_dimension)
    return None


def _map_resizer(mapper: _Mapper, prefix: str, resizer: Any, size: int | None, preset: Any) -> None:
    if size is None:
        return
    square = preset.input_size
    stride = 2**preset.max_level
    notes = []
    if resizer.HasField("fixed_shape_resizer"):
        fixed = resizer.fixed_shape_resizer
        if fixed.height != fixed.width:
            notes.append("tfod's input is square")
        notes.append("Model Garden keeps the aspect ratio and pads instead of stretching")
    elif not resizer.keep_aspect_ratio_resizer.pad_to_max_dimension:
        notes.append("tfod pads every image to a square")
    if size != square:
        notes.insert(0, f"the preset's input is {square}x{square}")
        keep = f"to keep {size}x{size}, set overrides task.model.input_size [{size}, {size}, 3]"
        if size % stride:
            keep = (
                f"{size}x{size} cannot be kept: the input must be a multiple of 2^max_level = "
                f"{stride} or the pyramid's levels do not halve evenly (the API's 'Dimensions "
                "must be equal, but are 20 and 19' at 300x300 with an FPN)"
            )
        notes.append(keep)
    status = MAPPED if size == square and len(notes) <= 1 else APPROXIMATED
    mapper.claim(prefix, status, f"{preset.name}: {square}x{square}", "; ".join(notes))


# -- train ------------------------------------------------------------------------------------


def _map_train(mapper: _Mapper) -> None:
    config = mapper.config
    train = config.train_config
    prefix = "train_config"
    if mapper.has(f"{prefix}.batch_size"):
        mapper.claim(
            f"{prefix}.batch_size", MAPPED, mapper.set("train", "batch_size", train.batch_size)
        )
    steps = train.num_steps
    qat = config.HasField("graph_rewriter") and config.graph_rewriter.HasField("quantization")
    if qat:
        _map_qat(mapper, steps)
    elif steps:
        mapper.claim(f"{prefix}.num_steps", MAPPED, mapper.set("train", "steps", steps))
    else:
        mapper.claim(
            f"{prefix}.num_steps",
            APPROXIMATED,
            "train.steps: the preset's",
            "0 trains forever in the API; tfod runs end",
        )
    _map_optimizer(mapper, steps)
    _map_augmentation(mapper)
    _map_fine_tune(mapper)


def _map_qat(mapper: _Mapper, steps: int) -> None:
    quantization = mapper.config.graph_rewriter.quantization
    prefix = "graph_rewriter.quantization"
    delay = quantization.delay
    float_steps = min(delay, steps) if steps else delay
    qat_steps = steps - delay if steps > delay else max(1, float_steps // 10)
    mapper.qat_steps = qat_steps
    became = mapper.set(
        "train", "steps", float_steps, f"float steps; then `tfod qat` {qat_steps} steps"
    )
    why = (
        f"the API fake-quantizes after {delay} steps; tfod trains {float_steps} float steps, then "
        f"`tfod qat` trains {qat_steps} quantization-aware steps from the best float checkpoint "
        "(Model Garden cannot switch fake quantization on mid-run)"
    )
    mapper.claim(f"{prefix}.delay", MAPPED, became, why)
    mapper.claim("train_config.num_steps", MAPPED, became, f"float {float_steps} + QAT {qat_steps}")
    for name in ("weight_bits", "activation_bits"):
        bits = getattr(quantization, name)
        mapper.claim(
            f"{prefix}.{name}",
            MAPPED if bits == 8 else UNSUPPORTED,
            "tfod qat: 8-bit",
            "" if bits == 8 else "tfod's QAT and the int8 TFLite are 8-bit",
        )
    mapper.claim(
        f"{prefix}.symmetric",
        APPROXIMATED,
        "tfod qat",
        "Model Garden's QAT scheme: symmetric per-channel weights, asymmetric activations",
    )
    mapper.claim(prefix, MAPPED, "tfod qat", "quantization-aware training with defaults")
    if not get_preset(mapper.yaml["model"]["preset"]).qat:
        mapper.rows.append(
            Row(
                prefix,
                "",
                UNSUPPORTED,
                "",
                f"the preset {mapper.yaml['model']['preset']} has no QAT: `tfod qat` supports {', '.join(qat_presets())}",
            )
        )


def _map_optimizer(mapper: _Mapper, steps: int) -> None:
    optimizer = mapper.config.train_config.optimizer
    kind = optimizer.WhichOneof("optimizer")
    prefix = f"train_config.optimizer.{kind}"
    if kind is None:
        return
    inner = getattr(optimizer, kind)
    became = "SGD with momentum 0.9 (tfod's)"
    if kind == "momentum_optimizer":
        momentum = inner.momentum_optimizer_value
        if not math.isclose(momentum, 0.9, rel_tol=1e-6):
            became = mapper.override(
                (*OPTIMIZER, "optimizer", "sgd", "momentum"), round(momentum, 6)
            )
        mapper.claim(f"{prefix}.momentum_optimizer_value", MAPPED, became)
    elif kind == "rms_prop_optimizer":
        rmsprop = {
            "rho": round(inner.decay, 6),
            "momentum": round(inner.momentum_optimizer_value, 6),
            "epsilon": round(inner.epsilon, 6),
        }
        became = mapper.override((*OPTIMIZER, "optimizer"), {"type": "rmsprop", "rmsprop": rmsprop})
        for name in ("decay", "momentum_optimizer_value", "epsilon"):
            mapper.claim(f"{prefix}.{name}", MAPPED, became)
    else:
        became = mapper.override((*OPTIMIZER, "optimizer"), {"type": "adam"})
    mapper.rows.append(Row(prefix, "{...}", MAPPED, became, ""))
    _map_schedule(mapper, f"{prefix}.learning_rate", inner.learning_rate, steps)
    mapper.claim(
        "train_config.optimizer.use_moving_average",
        UNSUPPORTED,
        "",
        "tfod does not average weights yet: it evaluates and exports the trained weights",
    )
    mapper.claim(
        "train_config.optimizer.moving_average_decay", UNSUPPORTED, "", "see use_moving_average"
    )


def _map_schedule(mapper: _Mapper, prefix: str, rate: Any, steps: int) -> None:
    kind = rate.WhichOneof("learning_rate")
    sub = f"{prefix}.{kind}"
    schedule = (*OPTIMIZER, "learning_rate")
    if kind == "cosine_decay_learning_rate":
        cosine = rate.cosine_decay_learning_rate
        mapper.claim(
            f"{sub}.learning_rate_base",
            MAPPED,
            mapper.set("train", "learning_rate", _round(cosine.learning_rate_base)),
        )
        mapper.claim(
            f"{sub}.warmup_steps", MAPPED, mapper.set("train", "warmup_steps", cosine.warmup_steps)
        )
        mapper.claim(
            f"{sub}.warmup_learning_rate",
            APPROXIMATED,
            "",
            "tfod warms up from a tenth of the peak rate",
        )
        same = not steps or cosine.total_steps == steps
        mapper.claim(
            f"{sub}.total_steps",
            MAPPED if same else APPROXIMATED,
            "train.steps",
            "tfod's cosine decays to zero at the last step"
            + ("" if same else f" ({steps}, not {cosine.total_steps})"),
        )
        mapper.claim(
            f"{sub}.hold_base_rate_steps",
            UNSUPPORTED,
            "",
            "tfod's cosine starts decaying right after the warmup",
        )
    elif kind is not None:
        value, shape = _decay(kind, getattr(rate, kind))
        mapper.set("train", "learning_rate", value)
        became = mapper.override(schedule, shape)
        manual = rate.manual_step_learning_rate
        if kind == "manual_step_learning_rate" and manual.warmup and manual.schedule:
            mapper.set("train", "warmup_steps", manual.schedule[0].step)
            mapper.claim(
                f"{sub}.warmup",
                APPROXIMATED,
                "train.warmup_steps",
                "a linear warmup from a tenth of the rate",
            )
        why = "" if "warmup_steps" in mapper.yaml["train"] else "tfod keeps its short warmup (auto)"
        mapper.claim(sub, MAPPED, became, why)


def _decay(kind: str, rate: Any) -> tuple[float, dict[str, Any]]:
    """The API's constant, exponential or manual-step schedule: (initial rate, Model Garden's
    `learning_rate` config)."""
    if kind == "constant_learning_rate":
        value = _round(rate.learning_rate)
        return value, {"type": "constant", "constant": {"learning_rate": value}}
    value = _round(rate.initial_learning_rate)
    if kind == "exponential_decay_learning_rate":
        exponential = {
            "initial_learning_rate": value,
            "decay_steps": rate.decay_steps,
            "decay_rate": _round(rate.decay_factor),
            "staircase": rate.staircase,
        }
        return value, {"type": "exponential", "exponential": exponential}
    boundaries = [s.step for s in rate.schedule]
    values = [value, *(_round(s.learning_rate) for s in rate.schedule)]
    return value, {"type": "stepwise", "stepwise": {"boundaries": boundaries, "values": values}}


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def _map_augmentation(mapper: _Mapper) -> None:
    steps = mapper.config.train_config.data_augmentation_options
    augment: list[str] = []
    for index, step in enumerate(steps):
        kind = step.WhichOneof("preprocessing_step")
        path = f"train_config.data_augmentation_options[{index}]"
        if kind == "random_horizontal_flip":
            augment.append("hflip")
            mapper.claim(path, MAPPED, "train.augment: hflip")
        elif kind == "random_image_scale":
            augment.append("scale_jitter")
            mapper.claim(
                path, APPROXIMATED, "train.augment: scale_jitter", "tfod scales by 0.8-1.2"
            )
    for item in mapper.unknown:
        if re.search(
            r"(ssd_random_crop|random_crop|random_pad_image|random_scale_crop)", item.path
        ) and item.path.startswith("train_config.data_augmentation_options"):
            augment.append("scale_jitter")
    if steps or any(
        u.path.startswith("train_config.data_augmentation_options") for u in mapper.unknown
    ):
        mapper.set(
            "train",
            "augment",
            sorted(set(augment), key=["hflip", "scale_jitter"].index),
            "from data_augmentation_options",
        )


def _map_fine_tune(mapper: _Mapper) -> None:
    from tfod.config.template import init_modules_for
    from tfod.zoo.catalog import ZOO

    train = mapper.config.train_config
    prefix = "train_config"
    if not train.fine_tune_checkpoint:
        return
    detection = (
        train.fine_tune_checkpoint_type in ("detection", "fine_tune", "full")
        or train.from_detection_checkpoint
    )
    preset = mapper.yaml["model"]["preset"]
    wanted = "detector" if detection else "backbone"
    entries = [
        e
        for e in ZOO.values()
        if e.preset == preset and e.restores == wanted and not e.name.endswith("-qat")
    ]
    entries = entries or [
        e for e in ZOO.values() if e.preset == preset and not e.name.endswith("-qat")
    ]
    why = (
        "an Object Detection API checkpoint's variables do not map onto Model Garden's modules, "
        "so it cannot be restored"
    )
    if PLACEHOLDER in train.fine_tune_checkpoint:
        why += f" (and {PLACEHOLDER} is a placeholder)"
    if entries:
        entry = entries[0]
        if detection:
            modules, reason = init_modules_for(entry, mapper.classes or 0)
            if mapper.classes is None:
                reason = "a new classification head for your classes"
        else:
            modules, reason = "backbone", "the config restored a classification backbone only"
        score = f"{'COCO AP' if entry.restores == 'detector' else 'ImageNet top-1'} {entry.coco_ap}"
        mapper.set("model", "init_checkpoint", f"zoo:{entry.name}", f"{score}: {entry.note}")
        became = f"model.init_checkpoint: zoo:{entry.name}"
        why += f"; the matching start is the zoo's {entry.name} ({score})"
        if modules == "all" and "anchor" in mapper.overrides.get("task", {}).get("model", {}):
            modules, reason = "backbone+decoder", "the head is new: the config's anchors differ"
        mapper.set("model", "init_modules", modules, reason)
    else:
        became = "model.init_checkpoint: null (from scratch)"
        why += f"; the zoo has no checkpoint for {preset}: `tfod zoo list` shows what it has"
    mapper.claim(f"{prefix}.fine_tune_checkpoint", APPROXIMATED, became, why)
    mapper.claim(
        f"{prefix}.fine_tune_checkpoint_type", APPROXIMATED, became, "see fine_tune_checkpoint"
    )
    mapper.claim(
        f"{prefix}.from_detection_checkpoint", APPROXIMATED, became, "see fine_tune_checkpoint"
    )


# -- eval -------------------------------------------------------------------------------------


def _map_eval(mapper: _Mapper) -> None:
    evaluation = mapper.config.eval_config
    prefix = "eval_config"
    metrics = list(evaluation.metrics_set)
    if metrics:
        if "coco_detection_metrics" in metrics:
            mapper.set("eval", "metric", "AP", "COCO box AP, as coco_detection_metrics")
            status, why = MAPPED, "tfod's COCO evaluation; best/ keeps the highest AP"
        elif any("pascal" in m or "oid" in m for m in metrics):
            mapper.set("eval", "metric", "AP50", "COCO AP at IoU 0.5: the VOC-style metric")
            status, why = (
                APPROXIMATED,
                "COCO AP50 (101-point interpolation) stands in for VOC mAP@0.5",
            )
        else:
            status, why = UNSUPPORTED, "tfod reports COCO box metrics"
        mapper.claim(f"{prefix}.metrics_set", status, "eval.metric", why)
    if mapper.has(f"{prefix}.batch_size"):
        mapper.claim(
            f"{prefix}.batch_size", MAPPED, mapper.set("eval", "batch_size", evaluation.batch_size)
        )
    mapper.claim(
        f"{prefix}.num_examples", APPROXIMATED, "", "tfod evaluates every validation image"
    )


# -- output -----------------------------------------------------------------------------------


def _yaml_text(
    mapper: _Mapper, rows: list[Row], source: Path, name: str, data_dir: Path, out: Path
) -> str:
    import os

    from tfod.version import __version__

    relative = os.path.relpath(data_dir.resolve(), out.resolve().parent)
    lines = [
        f"# tfod.yaml imported from {source} by `tfod import pipeline` (tfod {__version__}).",
        "# Check it with `tfod config validate`. What the config's fields became:",
    ]
    for status in (APPROXIMATED, UNSUPPORTED, TO_DO):
        picked = [r for r in rows if r.status == status]
        if picked:
            lines.append(f"#   {status} ({len(picked)}):")
            lines += [f"#     {r.field}: {r.why}" for r in picked]
    if mapper.qat_steps:
        lines.append(
            f"# Then quantization-aware training: tfod qat runs/{name} --steps {mapper.qat_steps}"
        )
    lines += [f"name: {name}", "", "data:", f"  dir: {relative}"]
    for section in ("model", "train", "eval"):
        values = mapper.yaml[section]
        if not values:
            continue
        lines += ["", f"{section}:"]
        for key, value in values.items():
            comment = mapper.comments.get((section, key), "")
            lines.append(f"  {key}: {_flow(value)}" + (f"  # {comment}" if comment else ""))
    if mapper.overrides:
        lines += [
            "",
            "# Raw Model Garden settings for what tfod.yaml has no field for:",
            "overrides:",
        ]
        body = yaml.safe_dump(mapper.overrides, default_flow_style=None, sort_keys=False)
        lines += ["  " + line for line in body.splitlines()]
    else:
        lines += ["", "overrides: {}"]
    return "\n".join(lines) + "\n"
