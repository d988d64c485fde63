"""`tfod import pipeline`: an Object Detection API pipeline.config -> a commented tfod.yaml.

The file is parsed with the API's own field names (`tfod/protos/pipeline.proto`, a subset of its
protos). Every field set in the file becomes one row of a table: *mapped* (it has a tfod
equivalent), *approximated* (the nearest tfod setting, and why), *unsupported* (no equivalent,
and why) or *to do* (a placeholder or a path that must be given). Fields the subset does not
declare are skipped by the parser, recorded with their line, and get a row too: nothing is
dropped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tfod import atomic
from tfod.config.schema import parse_config
from tfod.errors import TfodError
from tfod.odapi.mapper import (
    APPROXIMATED,
    MAPPED,
    PLACEHOLDER,
    TO_DO,
    UNSUPPORTED,
    Mapper,
    Row,
    flow,
)
from tfod.odapi.model_mapping import map_model
from tfod.odapi.textproto import parse_pipeline
from tfod.odapi.train_mapping import map_eval, map_train


@dataclass
class PipelineImport:
    """What `import_pipeline` made: the rows, the tfod.yaml text and the commands to run next."""

    rows: list[Row]
    yaml_text: str
    name: str
    data_dir: Path
    dataset: dict[str, Any] | None
    next_steps: list[str] = field(default_factory=list)


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
    mapper = Mapper(config, unknown)
    run_name = name or _run_name(path)
    data_dir = data_dir or out.parent / "data" / run_name
    base = paths_from or path.parent
    labels = _map_inputs(mapper, base)
    mapper.classes = len(labels) if labels else None
    map_model(mapper, preset, mapper.classes)
    map_train(mapper)
    map_eval(mapper)
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


def _map_inputs(mapper: Mapper, base: Path) -> dict[int, str] | None:
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


def _map_record_paths(mapper: Mapper, base: Path, prefix: str, reader: Any, split: str) -> None:
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


def _map_label_map(mapper: Mapper, base: Path, prefix: str, reader: Any) -> dict[int, str] | None:
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


# -- train ------------------------------------------------------------------------------------


# -- eval -------------------------------------------------------------------------------------


# -- output -----------------------------------------------------------------------------------


def _yaml_text(
    mapper: Mapper, rows: list[Row], source: Path, name: str, data_dir: Path, out: Path
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
            lines.append(f"  {key}: {flow(value)}" + (f"  # {comment}" if comment else ""))
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
