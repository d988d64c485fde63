"""The rows of `tfod import pipeline`: every field set in the pipeline.config, what it became in
the tfod.yaml, and its status: *mapped*, *approximated*, *unsupported* or *to do*."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tfod.odapi.textproto import Unknown, leaves

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


@dataclass(frozen=True)
class Row:
    """One field of the pipeline.config and what it became."""

    field: str
    value: str
    status: str
    became: str
    why: str


# Fields tfod's subset does not declare, by path pattern: what tfod does instead.
NOT_MODELLED: list[tuple[str, str, str]] = [
    (r"model\.(center_net|experimental_model)\.", UNSUPPORTED,
     "part of a model tfod does not train (see the model row)"),
    (r"model\.faster_rcnn\.second_stage_box_predictor\.mask_rcnn_box_predictor\."
     r"(mask_\w+|masks_are_class_agnostic)", APPROXIMATED,
     "Model Garden's mask head stands in (28x28 masks, four 256-channel convolutions, one mask "
     "per class): `tfod config show` prints it"),
    (r"model\.faster_rcnn\.first_stage_anchor_generator", APPROXIMATED,
     "Model Garden's region proposal anchors: one size per pyramid level (anchor_size x stride), "
     "aspect ratios 0.5, 1, 2 (task.model.anchor)"),
    (r"model\.faster_rcnn\.feature_extractor\.", APPROXIMATED,
     "the preset's backbone builds its own layers (stride, batch norm)"),
    (r"model\.faster_rcnn\.", APPROXIMATED,
     "Model Garden's Faster R-CNN settings stand in for the two stages' (proposals, ROI "
     "sampling, box head, losses): `tfod config show` prints them"),
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


class Mapper:
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
        return f"{section}.{key}: {flow(value)}"

    def override(self, path: tuple[str, ...], value: Any) -> str:
        node = self.overrides
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
        return f"overrides.{'.'.join(path)}: {flow(value)}"

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


def flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False)
    return text.removesuffix("\n").removesuffix("\n...").strip()
