"""Model Garden's detection tasks (RetinaNet; Faster R-CNN, its `maskrcnn` task; YOLOv7) with
tfod's checkpoint initialisation (see `tfod.train.finetune`)."""

from __future__ import annotations

from typing import Any

from official.vision.configs import maskrcnn as maskrcnn_config
from official.vision.tasks import maskrcnn, retinanet

from tfod.model.quantize import is_qat, quantize
from tfod.train import finetune


def make_task(task_config: Any, logging_dir: str | None = None) -> Any:
    """The task for `task_config`: tfod's QAT RetinaNet task for a QAT config, else tfod's task of
    the config's family."""
    if is_qat(task_config):
        return _qat_task_class()(task_config, logging_dir=logging_dir)
    if isinstance(task_config, maskrcnn_config.MaskRCNNTask):
        return TfodMaskRCNNTask(task_config, logging_dir=logging_dir)
    from official.projects.yolo.configs import yolov7 as yolov7_config

    if isinstance(task_config, yolov7_config.YoloV7Task):
        return _yolo_task_class()(task_config, logging_dir=logging_dir)
    return TfodRetinaNetTask(task_config, logging_dir=logging_dir)


def _qat_task_class() -> Any:
    """Model Garden's QAT RetinaNet task whose model starts with ALL the float weights.

    Model Garden reads the float checkpoint (`quantization.pretrained_original_checkpoint`) into
    the float model, then builds the fake-quantized one from it. Its backbone and head keep the
    weights; its FPN does not: `clone_model` + `quantize_apply` rebuild the FPN's layers with
    fresh weights (measured: 32 of the FPN's 34 weights re-initialised; the QAT model scored AP 0.0
    before training and a 60-step QAT run of the demo lost a third of its AP). Model Garden's
    recipes retrain for hundreds of epochs and never notice. Here the float FPN's weights are
    copied into the QAT FPN, layer by layer. Its head is tfod's, with activation ranges per
    pyramid level (`tfod.model.qat_head`).
    """
    from official.projects.qat.vision.tasks import retinanet as qat_retinanet

    class TfodQatRetinaNetTask(qat_retinanet.RetinaNetTask):  # type: ignore[misc]
        def build_model(self) -> Any:
            return quantize(retinanet.RetinaNetTask.build_model(self), self.task_config)

    return TfodQatRetinaNetTask


def _yolo_task_class() -> Any:
    """Model Garden's `YoloV7Task`, initialised as `_FindsModules` says."""
    from official.projects.yolo.tasks import yolov7

    class TfodYoloV7Task(_FindsModules, yolov7.YoloV7Task):  # type: ignore[misc]
        pass

    return TfodYoloV7Task


class _FindsModules:
    """A task whose `initialize` finds the modules wherever the checkpoint keeps them.

    Model Garden calls `initialize` only when the run folder has no checkpoint of its own, so a
    resumed run continues from its own weights, never from `init_checkpoint` again.
    """

    task_config: Any

    restored: dict[str, Any] | None = None

    def initialize(self, model: Any) -> None:
        config = self.task_config
        if not config.init_checkpoint:
            return
        plan = finetune.plan_restore(
            config.init_checkpoint, config.init_checkpoint_modules, finetune.classifier_size(config)
        )
        report = finetune.restore(model, plan)
        self.restored = {
            "checkpoint": plan.checkpoint,
            "modules": list(plan.modules),
            "head_reinitialised": plan.skipped_head,
            "report": report,
            **finetune.provenance(config.init_checkpoint),
        }


class TfodRetinaNetTask(_FindsModules, retinanet.RetinaNetTask):  # type: ignore[misc]
    """Model Garden's `RetinaNetTask`, initialised as `_FindsModules` says."""


class TfodMaskRCNNTask(_FindsModules, maskrcnn.MaskRCNNTask):  # type: ignore[misc]
    """Model Garden's `MaskRCNNTask` (Faster R-CNN without masks), initialised as `_FindsModules`
    says."""
