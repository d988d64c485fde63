"""ImageNet backbones from a second publisher: Keras Applications' weights, mapped into Model
Garden's backbones.

Keras Applications publishes its ImageNet weights as HDF5 files in a bucket of its own
(`storage.googleapis.com/tensorflow/keras-applications/...`), downloaded by every
`keras.applications.MobileNetV2(weights="imagenet")` call. Model Garden's MobileNetV2 is the same
network layer for layer: its convolutions, depthwise convolutions and batch norms, taken in the
order the networks apply them, pair one to one with Keras's, with the same shapes, and the
weights copy unchanged. One convention differs: Keras pads a stride-2 layer explicitly
(`correct_pad`: (0, 1), and (1, 1) only on a side known to be odd) where Model Garden uses "same"
padding ((0, 1) on an even side, (1, 1) on an odd one). The two networks therefore compute the
same features wherever every stride-2 layer sees an even side, as in every tfod preset (inputs
are multiples of 2**max_level); on an odd side their feature maps differ even in size.

The inputs differ too: Keras's weights were trained on pixels scaled to -1..1, Model Garden feeds
ImageNet-normalised pixels ((x - mean) / std). The conversion folds that affine map into the first
convolution and its batch norm, exactly inside the image; only where the first stride-2
convolution reads its zero padding (bottom row, right column) does the padding now stand for a
pixel of value (1 - 2 mean) / (2 std) in Keras's terms (0.07, 0.20, 0.42 for R, G, B) instead of
0. The tests measure both: the copied networks agree bit for bit, the converted one within a
stated tolerance.

ResNet-50 is not mapped: Keras's ResNet50 is ResNet v1 (the stride in each stage's first 1x1
convolution, a stem padded 3 on each side) where Model Garden's is v1.5 (the stride in the 3x3
convolution), so copied weights would compute other features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tfod.errors import TfodError, describe

CHECKPOINT = "ckpt-0"  # the converted backbone's checkpoint prefix in the cache entry
MODELS = ("MobileNetV2",)  # the Keras Applications networks mapped


def networks(model: str, width: float) -> tuple[Any, Any]:
    """Keras Applications' `model` at `width` without its top, and the Model Garden backbone it
    maps into, both untrained."""
    import tf_keras
    from official.vision.modeling.backbones import mobilenet

    if model not in MODELS:
        raise TfodError(
            f"no mapping from Keras's {model} into a Model Garden backbone (mapped: "
            f"{', '.join(MODELS)})"
        )
    keras = tf_keras.applications.MobileNetV2(
        input_shape=(None, None, 3), alpha=width, include_top=False, weights=None
    )
    garden = mobilenet.MobileNet(
        model_id="MobileNetV2",
        filter_size_scale=width,
        input_specs=tf_keras.layers.InputSpec(shape=[None, None, None, 3]),
    )
    return keras, garden


def _weighted_layers(model: Any) -> list[Any]:
    """The convolutions, depthwise convolutions and batch norms of `model`, in the order they
    were built (the order the network applies them, for both MobileNetV2s)."""
    import tf_keras

    kinds = (
        tf_keras.layers.Conv2D,
        tf_keras.layers.DepthwiseConv2D,  # not a Conv2D in Keras 2
        tf_keras.layers.BatchNormalization,
    )
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, kinds) and layer.weights
    ]


def copy_weights(source: Any, target: Any) -> int:
    """Copy the weights of Keras's network `source` into Model Garden's `target`, layer by layer.

    Returns:
        How many layers were copied.

    Raises:
        TfodError: the two networks' layers do not pair (count, kind or shape).
    """
    theirs, ours = _weighted_layers(source), _weighted_layers(target)
    if len(theirs) != len(ours):
        raise TfodError(
            f"Keras's network has {len(theirs)} weighted layers, Model Garden's {len(ours)}: "
            "not the same architecture"
        )
    covered = sum(len(layer.weights) for layer in ours)
    if covered != len(target.weights):
        raise TfodError(
            f"{len(target.weights) - covered} of Model Garden's weights are in no convolution or "
            "batch norm: the mapping would leave them random"
        )
    for keras_layer, garden_layer in zip(theirs, ours, strict=True):
        values = keras_layer.get_weights()
        same_kind = type(keras_layer).__name__ == type(garden_layer).__name__
        shapes = [v.shape for v in values] == [tuple(w.shape) for w in garden_layer.weights]
        if not (same_kind and shapes):
            raise TfodError(
                f"Keras's layer {keras_layer.name} ({type(keras_layer).__name__}, "
                f"{[v.shape for v in values]}) does not pair with Model Garden's "
                f"{garden_layer.name} ({type(garden_layer).__name__}, "
                f"{[tuple(w.shape) for w in garden_layer.weights]})"
            )
        garden_layer.set_weights(values)
    return len(ours)


def fold_input_scaling(backbone: Any) -> None:
    """Make `backbone`'s first convolution take Model Garden's input, z = (x - mean) / std (x in
    0..1, ImageNet's mean and std), where Keras's weights were trained on u = 2x - 1 = a*z + b:
    the kernel is scaled by a per input channel and the constant W.b moves into the batch norm's
    moving mean. Exact inside the image; the zero padding at the bottom and right edges of the
    first stride-2 convolution stands for u = b there instead of u = 0 (see the module doc)."""
    import numpy as np
    from official.vision.ops.preprocess_ops import MEAN_NORM, STDDEV_NORM

    conv, norm = _weighted_layers(backbone)[:2]
    scale = 2 * np.asarray(STDDEV_NORM, np.float32)
    shift = 2 * np.asarray(MEAN_NORM, np.float32) - 1
    (kernel,) = conv.get_weights()
    gamma, beta, mean, variance = norm.get_weights()
    conv.set_weights([kernel * scale[None, None, :, None]])
    norm.set_weights([gamma, beta, mean - np.einsum("hwco,c->o", kernel, shift), variance])


def convert(h5: Path, model: str, width: float, out: Path) -> Path:
    """Read Keras Applications' weights file `h5` for `model` at `width` and write them as Model
    Garden's backbone: a checkpoint `out/ckpt-0` holding `backbone/...` (what
    `init_checkpoint_modules: backbone` restores).

    Returns:
        The checkpoint prefix.

    Raises:
        TfodError: the file is not HDF5, or holds weights of another network or width.
    """
    import tensorflow as tf

    source, backbone = networks(model, width)
    try:
        source.load_weights(str(h5))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TfodError(
            f"not Keras Applications' {model} weights at width {width:g} ({describe(err)})", h5
        ) from None
    copy_weights(source, backbone)
    fold_input_scaling(backbone)
    prefix = out / CHECKPOINT
    tf.train.Checkpoint(backbone=backbone).write(str(prefix))
    return prefix
