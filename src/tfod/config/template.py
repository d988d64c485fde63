"""`tfod init`: a commented tfod.yaml for a dataset."""

from __future__ import annotations

import os
from pathlib import Path

from tfod import atomic
from tfod.config.presets import PRESETS, SMOKE_SUFFIX, get_preset
from tfod.config.schema import parse_config
from tfod.errors import TfodError

TEMPLATE = """\
# tfod.yaml: what to train. Everything not written here comes from the preset.
# Check it with `tfod config validate`; see every Model Garden setting with `tfod config show`.
name: {name}                      # the run folder is runs/<name>

data:
  dir: {data}                     # written by `tfod data convert` (paths are relative to this file)

model:
  preset: {preset}
  # presets: {presets}
  init_checkpoint: null           # a checkpoint, a folder of checkpoints, or another tfod run
  init_modules: backbone          # backbone | backbone+decoder | all (a head for other classes is re-initialised)

train:
  batch_size: {batch}             # global batch over all GPUs
  steps: {steps}
  learning_rate: auto             # preset rate scaled linearly to the batch, with warmup
  norm_momentum: auto             # batch-norm momentum fitted to the number of steps
  augment: [hflip, scale_jitter]
  seed: 0

eval:
  every_steps: null               # default: 10 evaluations per run
  metric: AP                      # best/ keeps the checkpoint with the highest value
  batch_size: 8

overrides: {{}}                     # raw Model Garden params for experts, e.g. {{task: {{model: {{head: {{num_convs: 2}}}}}}}}
"""


def write_template(out: Path, data: Path, preset: str, name: str | None, force: bool) -> None:
    """Write a tfod.yaml for the dataset `data` to `out` (refusing to overwrite unless `force`)."""
    chosen = get_preset(preset)
    if out.exists() and not force:
        raise TfodError("exists; pass --force to overwrite it", out)
    relative = os.path.relpath(data.resolve(), out.resolve().parent)
    text = TEMPLATE.format(
        name=name or data.resolve().name or "run",
        data=relative,
        preset=chosen.name,
        presets=", ".join(p for p in PRESETS if not p.endswith(SMOKE_SUFFIX)),
        batch=chosen.batch_size,
        steps=chosen.steps,
    )
    import yaml

    parse_config(yaml.safe_load(text), out)  # the template itself must satisfy the schema
    atomic.write_text(out, text)
