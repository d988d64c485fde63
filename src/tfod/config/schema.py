"""The tfod.yaml schema: small and readable; everything else comes from the preset.

```yaml
name: shapes
data: {dir: data/demo}
model: {preset: retinanet-mobilenetv2-256, init_checkpoint: null, init_modules: backbone}
train: {batch_size: 8, steps: 2000, learning_rate: auto}   # or time: 10m instead of steps
eval: {every_steps: 200, metric: AP}
overrides: {}   # raw Model Garden params, e.g. {task: {model: {head: {num_convs: 2}}}}
qat: null       # written by `tfod qat`: {parent: runs/NAME, checkpoint: best}
```
Relative paths are read from the folder of the tfod.yaml file.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tfod.errors import TfodError
from tfod.textfile import read_text

Augment = Literal["hflip", "scale_jitter"]
DEFAULT_AUGMENT: tuple[Augment, ...] = ("hflip", "scale_jitter")
Metric = Literal["AP", "AP50", "AP75", "APs", "APm", "APl", "ARmax100"]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$")
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(value: str | float) -> float:
    """Seconds in `value`: a number of seconds, or text like "90s", "10m", "1.5h".

    Raises:
        TfodError: anything else, or a duration that is not positive.
    """
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if match is None:
            raise TfodError(f"{value!r} is not a duration; write e.g. 300, 90s, 10m or 1.5h")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise TfodError(f"a time budget must be positive, got {value!r}")
    return seconds


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataSection(_Section):
    dir: Path = Field(
        description="dataset folder written by `tfod data convert` or `tfod data demo`"
    )


class ModelSection(_Section):
    preset: str = "retinanet-mobilenetv2-256"
    init_checkpoint: str | None = Field(
        default=None,
        description="where to start from: zoo:NAME (`tfod zoo list`), an https:// URL of a .tar.gz "
        "or a checkpoint prefix, a checkpoint (prefix or folder) or another tfod run folder",
    )
    init_modules: Literal["backbone", "backbone+decoder", "all"] = "backbone"


class EarlyStop(_Section):
    metric: Metric = "AP"
    patience: int = Field(
        default=3, gt=0, description="evaluations without improvement before stopping"
    )
    min_delta: float = Field(
        default=0.0, ge=0, description="smallest gain that counts as improvement"
    )


class TrainSection(_Section):
    batch_size: Annotated[int, Field(gt=0)] | Literal["auto"] | None = Field(
        default=None, description="global batch (default: preset); auto = the largest that fits"
    )
    steps: int | None = Field(default=None, gt=0, description="training steps (default: preset)")
    time: str | float | None = Field(
        default=None,
        description="a wall-clock budget instead of steps, e.g. 10m, 90s, 1.5h: the step count and "
        "the schedule are fitted to end on time",
    )
    learning_rate: Annotated[float, Field(gt=0, le=10)] | Literal["auto"] = Field(
        default="auto",
        description="peak rate; auto = the preset's rate scaled to the batch: by the square root "
        "below the preset's reference batch (at most 4x the linear rule), linearly above it",
    )
    warmup_steps: int | Literal["auto"] = "auto"
    norm_momentum: float | Literal["auto"] = Field(
        default="auto", description="batch-norm moving-average momentum; auto fits the run length"
    )
    augment: list[Augment] = Field(default_factory=lambda: list(DEFAULT_AUGMENT))
    ema: Literal["auto"] | Annotated[float, Field(gt=0, lt=1)] | None = Field(
        default=None,
        description="an exponential moving average of the weights, evaluated and exported: its "
        "decay, or auto (averaging over a tenth of the run); null: off",
    )
    checkpoint_every: int | None = Field(default=None, gt=0)
    early_stop: EarlyStop | None = Field(default=None, description="stop when the metric plateaus")
    seed: int = 0
    strategy: Literal["auto", "one_device", "mirrored", "multi_worker"] = Field(
        default="auto",
        description="auto: multi_worker when TF_CONFIG names a cluster, mirrored with several "
        "GPUs, else one_device; batch_size stays the global batch",
    )
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = Field(
        default="float32", description="mixed precision: a GPU (float16) or TPU (bfloat16) setting"
    )
    peer_timeout: str | float = Field(
        default="5m",
        description="in a cluster (TF_CONFIG), how long a task waits for its peers to start "
        "before it stops naming the ones that did not answer, e.g. 90s, 5m",
    )

    @field_validator("time", "peer_timeout")
    @classmethod
    def _duration(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            try:
                parse_duration(value)
            except TfodError as err:
                raise ValueError(str(err)) from None
        return value

    @model_validator(mode="after")
    def _steps_or_time(self) -> TrainSection:
        if self.steps is not None and self.time is not None:
            raise ValueError("steps and time are both set; a run has one or the other")
        return self


class EvalSection(_Section):
    every_steps: int | None = Field(default=None, gt=0, description="default: 10 times per run")
    metric: Metric = "AP"
    batch_size: int = Field(default=8, gt=0)


class QatSection(_Section):
    """Quantization-aware training of a float run's checkpoint (`tfod qat` writes this)."""

    parent: Path = Field(description="the float run folder the QAT run starts from")
    checkpoint: str = Field(
        default="best", description="the parent's checkpoint: best, latest or a step"
    )


class TfodConfig(_Section):
    """A whole tfod.yaml."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    data: DataSection
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    overrides: dict[str, Any] = Field(default_factory=dict)
    qat: QatSection | None = None

    @field_validator("overrides")
    @classmethod
    def _finite(cls, value: dict[str, Any]) -> dict[str, Any]:
        where = _non_finite(value)
        if where is not None:
            raise ValueError(f"{where} is not a finite number")
        return value


def _non_finite(value: Any, path: str = "") -> str | None:
    """The dotted path of the first NaN or infinity in `value` (None: there is none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "the value"
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        found = _non_finite(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def load_config(path: Path) -> TfodConfig:
    """Read and validate a tfod.yaml; relative paths become relative to its folder.

    Raises:
        TfodError: the file is missing, not YAML, or breaks the schema (each bad field named).
    """
    text = read_text(path, "tfod.yaml")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise TfodError(f"not valid YAML: {err}", path) from err
    return parse_config(raw, path)


def parse_config(raw: Any, path: Path) -> TfodConfig:
    """Validate already-parsed YAML content of the file `path`."""
    if not isinstance(raw, dict):
        raise TfodError("must be a mapping with at least `name:` and `data: {dir: ...}`", path)
    try:
        config = TfodConfig.model_validate(raw)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"]) or "(top level)"
            lines.append(f"  {where}: {e['msg']}")
        raise TfodError("invalid settings:\n" + "\n".join(lines), path) from None
    base = path.parent
    data = config.data.model_copy(update={"dir": _resolve(base, config.data.dir)})
    model = config.model
    if model.init_checkpoint and not _is_remote(model.init_checkpoint):
        model = model.model_copy(
            update={"init_checkpoint": str(_resolve(base, Path(model.init_checkpoint)))}
        )
    qat = config.qat
    if qat is not None:
        qat = qat.model_copy(update={"parent": _resolve(base, qat.parent)})
    return config.model_copy(update={"data": data, "model": model, "qat": qat})


def _is_remote(reference: str) -> bool:
    from tfod.zoo.cache import is_remote

    return is_remote(reference)


def _resolve(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else (base / path).resolve()


def dump_config(config: TfodConfig) -> str:
    """The config as YAML (defaults included), for a run folder's copy."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
