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

ResNet-50 converts exactly in two respects and not in a third. Keras's convolutions carry biases
and its batch norms an epsilon of 1.001e-5, where Model Garden's convolutions have none and its
epsilon is 1e-3: each bias moves into the next batch norm's moving mean and each gamma is
rescaled for the other epsilon (exact). Keras's ResNet takes "caffe" pixels (BGR, 0..255 less the
mean pixel), folded into the first convolution as for MobileNetV2 (its zero padding stands for
the mean pixel there as here). But Keras's ResNet50 is ResNet v1 (each downsampling block strides
its first 1x1 convolution) where Model Garden's is v1.5 (it strides the 3x3 one), and Keras pads
its stem symmetrically (3, then 1) where "same" pads (2, 3) and (0, 1): the stem and first stage
compute Keras's features on a grid shifted by one pixel (the tests prove them equal on the
shifted image), while the three downsampling blocks read a 3x3 neighbourhood where Keras's read
every other pixel of a 5x5 one. The copied weights are a start, not the same network:
`nox -s bench -- pretrained` measures what a trained one keeps.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tfod.errors import TfodError, describe

CHECKPOINT = "ckpt-0"  # the converted backbone's checkpoint prefix in the cache entry
MODELS = ("MobileNetV2", "ResNet50")  # the Keras Applications networks mapped
CAFFE_MEAN_RGB = (123.68, 116.779, 103.939)  # what Keras's ResNet preprocessing subtracts


def networks(model: str, width: float) -> tuple[Any, Any]:
    """Keras Applications' `model` at `width` without its top, and the Model Garden backbone it
    maps into, both untrained."""
    import tf_keras
    from official.vision.modeling.backbones import mobilenet, resnet

    if model not in MODELS or (model == "ResNet50" and width != 1.0):
        raise TfodError(
            f"no mapping from Keras's {model} at width {width:g} into a Model Garden backbone "
            f"(mapped: MobileNetV2 at any width, ResNet50)"
        )
    specs = tf_keras.layers.InputSpec(shape=[None, None, None, 3])
    if model == "ResNet50":
        keras = tf_keras.applications.ResNet50(
            input_shape=(None, None, 3), include_top=False, weights=None
        )
        return keras, resnet.ResNet(model_id=50, input_specs=specs)
    keras = tf_keras.applications.MobileNetV2(
        input_shape=(None, None, 3), alpha=width, include_top=False, weights=None
    )
    garden = mobilenet.MobileNet(model_id="MobileNetV2", filter_size_scale=width, input_specs=specs)
    return keras, garden


def _weighted_layers(model: Any) -> list[Any]:
    """The convolutions, depthwise convolutions and batch norms of `model`, in the order the
    network applies them (the order they were built; for Keras's ResNet, by name: Keras builds a
    block's shortcut and main branch in either order, Model Garden the shortcut first)."""
    import tf_keras

    kinds = (
        tf_keras.layers.Conv2D,
        tf_keras.layers.DepthwiseConv2D,  # not a Conv2D in Keras 2
        tf_keras.layers.BatchNormalization,
    )
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, kinds) and layer.weights
    ]
    if model.name == "resnet50":  # conv{stage}[_block{b}_{0 shortcut, 1-3 main}]_{conv, bn}
        layers.sort(key=lambda layer: [int(n) for n in re.findall(r"\d+", layer.name)])
    return layers


def _pair(keras_layer: Any, garden_layer: Any, bias: Any) -> tuple[list[Any], Any]:
    """Keras's layer's weights as Model Garden's layer takes them, and the convolution bias to
    fold into the next batch norm: y = BN(Wx + b) is BN'(Wx) with the moving mean less b."""
    import numpy as np

    values = keras_layer.get_weights()
    if not hasattr(keras_layer, "epsilon"):  # a convolution
        if len(values) == len(garden_layer.weights) + 1 and keras_layer.use_bias:
            return values[:-1], values[-1]
        return values, None
    if bias is not None or keras_layer.epsilon != garden_layer.epsilon:
        gamma, beta, mean, variance = values
        # the same inference output under the other epsilon: exact
        gamma = gamma * np.sqrt(
            (variance + garden_layer.epsilon) / (variance + keras_layer.epsilon)
        )
        values = [gamma, beta, mean - (0 if bias is None else bias), variance]
    return values, None


def copy_weights(source: Any, target: Any) -> int:
    """Copy the weights of Keras's network `source` into Model Garden's `target`, layer by layer
    (convolution biases folded into the batch norms that follow them).

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
    bias = None
    for keras_layer, garden_layer in zip(theirs, ours, strict=True):
        kind = type(garden_layer).__name__
        pairs = type(keras_layer).__name__ == kind and (bias is None or "Normalization" in kind)
        values, bias = _pair(keras_layer, garden_layer, bias) if pairs else ([], None)
        if not (pairs and [v.shape for v in values] == [w.shape for w in garden_layer.weights]):
            raise TfodError(
                f"Keras's layer {keras_layer.name} ({type(keras_layer).__name__}, "
                f"{[tuple(w.shape) for w in keras_layer.weights]}) does not pair with Model "
                f"Garden's {garden_layer.name} ({kind}, "
                f"{[tuple(w.shape) for w in garden_layer.weights]})"
            )
        garden_layer.set_weights(values)
    return len(ours)


def fold_input_scaling(backbone: Any, model: str) -> None:
    """Make `backbone`'s first convolution take Model Garden's input, z = (x - mean) / std (x in
    0..1, ImageNet's mean and std), where Keras's `model` was trained on u = a*z + b, per channel:
    MobileNetV2 on 2x - 1, ResNet50 on 255x less the caffe mean pixel, in BGR order. The kernel is
    scaled by a per input channel (and, for BGR, its input channels reversed); the constant W.b
    moves into the batch norm's moving mean. Exact inside the image; the zero padding reads
    z = 0 where Keras read u = 0 (see the module doc)."""
    import numpy as np
    from official.vision.ops.preprocess_ops import MEAN_NORM, STDDEV_NORM

    mean, std = np.asarray(MEAN_NORM, np.float32), np.asarray(STDDEV_NORM, np.float32)
    conv, norm = _weighted_layers(backbone)[:2]
    (kernel,) = conv.get_weights()
    if model == "ResNet50":
        kernel = kernel[:, :, ::-1, :]  # BGR -> RGB
        scale, shift = 255 * std, 255 * mean - np.asarray(CAFFE_MEAN_RGB, np.float32)
    else:
        scale, shift = 2 * std, 2 * mean - 1
    gamma, beta, moving_mean, variance = norm.get_weights()
    conv.set_weights([kernel * scale[None, None, :, None]])
    norm.set_weights([gamma, beta, moving_mean - np.einsum("hwco,c->o", kernel, shift), variance])


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
    fold_input_scaling(backbone, model)
    prefix = out / CHECKPOINT
    tf.train.Checkpoint(backbone=backbone).write(str(prefix))
    return prefix
