"""The fake-quantized twin of a float RetinaNet (Model Garden's QAT factory, tfod's per-level
head), as the QAT task trains it and the QAT serving module exports it."""

from __future__ import annotations

import re
from typing import Any


def is_qat(task_config: Any) -> bool:
    """Whether a Model Garden task config is a QAT one (it has a `quantization` section)."""
    return getattr(task_config, "quantization", None) is not None


def quantize(model: Any, task_config: Any) -> Any:
    """The fake-quantized twin of the float RetinaNet `model` (Model Garden's QAT factory, tfod's
    per-level head), holding the float weights of `quantization.pretrained_original_checkpoint`
    when it names one.

    The float model is called once first: Model Garden copies the float head's weights into the
    QAT head, and a head that was never called has none. Model Garden's QAT serving module skips
    that call; a float MobileNetV2 model reaches it with its head built, a SpineNet-Mobile one
    does not, so exporting, verifying or predicting a SpineNet-Mobile QAT run stopped with "Not
    enought original model weights" (the export's QAT serving module builds its model here too).
    """
    import tensorflow as tf
    from official.projects.qat.vision.modeling import factory

    from tfod.model import qat_head

    qat_head.install()
    model(tf.zeros([1, *task_config.model.input_size]), training=False)
    quantized = factory.build_qat_retinanet(model, task_config.quantization, task_config.model)
    if task_config.quantization.quantize_detection_decoder:
        copy_float_weights(model.decoder, quantized.decoder)
    return quantized


def copy_float_weights(float_model: Any, quantized: Any) -> None:
    """Copy `float_model`'s weights into the fake-quantized `quantized` built from it.

    Layers that kept their name (batch norms inside Model Garden's BatchNormalizationWrapper) are
    copied by name. tfmot splits each SeparableConv2D into a DepthwiseConv2D and a Conv2D with new
    names, their kernels held by the QuantizeWrapper: those are matched in creation order and by
    shape, each separable conv to the first unused pair whose kernels have its shapes.

    Raises:
        ValueError: a float layer with weights found no place in `quantized`.
    """
    import tf_keras

    by_name = {_unwrapped(layer).name: _unwrapped(layer) for layer in quantized.layers}
    pieces = {
        kind: sorted(
            (q for q in quantized.layers if type(_unwrapped(q)) is kind), key=_creation_order
        )
        for kind in (tf_keras.layers.DepthwiseConv2D, tf_keras.layers.Conv2D)
    }
    for layer in float_model.layers:
        if not layer.weights:
            continue
        if layer.name in by_name:
            by_name[layer.name].set_weights(layer.get_weights())
            continue
        if not isinstance(layer, tf_keras.layers.SeparableConv2D):
            raise ValueError(f"no fake-quantized twin of {layer.name} to copy its weights into")
        _copy_separable(layer, pieces)


def _copy_separable(layer: Any, pieces: dict[Any, list[Any]]) -> None:
    """A SeparableConv2D's kernels (and bias) into the first unused depthwise and pointwise
    wrappers of `pieces` whose kernels have their shapes; those are then used."""
    import tf_keras

    depthwise, pointwise, *bias = layer.get_weights()
    targets = []
    for kind, name, value in (
        (tf_keras.layers.DepthwiseConv2D, "depthwise_kernel", depthwise),
        (tf_keras.layers.Conv2D, "kernel", pointwise),
    ):
        candidates = pieces[kind]
        found = next(
            (w for w in candidates if tuple(_variable(w, name).shape) == value.shape), None
        )
        if found is None:
            raise ValueError(f"no fake-quantized twin of {layer.name} to copy its weights into")
        candidates.remove(found)
        targets.append((found, name, value))
    for wrapper, name, value in targets:
        _variable(wrapper, name).assign(value)
    if bias:
        _variable(targets[1][0], "bias").assign(bias[0])


def _unwrapped(layer: Any) -> Any:
    while hasattr(layer, "layer"):
        layer = layer.layer
    return layer


def _creation_order(layer: Any) -> int:
    match = re.search(r"_(\d+)$", layer.name)
    return int(match.group(1)) if match else 0


def _variable(wrapper: Any, name: str) -> Any:
    return next(w for w in wrapper.weights if w.name.split("/")[-1] == f"{name}:0")
