"""Model Garden's RetinaNet task with tfod's checkpoint initialisation (see `tfod.train.finetune`)."""

from __future__ import annotations

from typing import Any

from official.vision.tasks import retinanet

from tfod.train import finetune


class TfodRetinaNetTask(retinanet.RetinaNetTask):  # type: ignore[misc]
    """`RetinaNetTask` whose `initialize` finds the modules wherever the checkpoint keeps them.

    Model Garden calls `initialize` only when the run folder has no checkpoint of its own, so a
    resumed run continues from its own weights, never from `init_checkpoint` again.
    """

    restored: dict[str, Any] | None = None

    def initialize(self, model: Any) -> None:
        config = self.task_config
        if not config.init_checkpoint:
            return
        anchor = config.model.anchor
        classifier = config.model.num_classes * anchor.num_scales * len(anchor.aspect_ratios)
        plan = finetune.plan_restore(
            config.init_checkpoint, config.init_checkpoint_modules, classifier
        )
        report = finetune.restore(model, plan)
        self.restored = {
            "checkpoint": plan.checkpoint,
            "modules": list(plan.modules),
            "head_reinitialised": plan.skipped_head,
            "report": report,
            **finetune.provenance(config.init_checkpoint),
        }
