"""Reading a pipeline.config: protobuf's text format with the Object Detection API's field names
(`tfod/protos/pipeline.proto`, a subset of its protos), every field the subset does not declare
recorded with its line instead of stopping the parse; and the fields set, flattened to paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from tfod.errors import TfodError
from tfod.protos import pipeline_pb2
from tfod.textfile import read_text


@dataclass(frozen=True)
class Unknown:
    """A field the parser skipped: not declared in tfod's subset of the API's protos."""

    path: str
    value: str
    line: int


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
