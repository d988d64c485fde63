"""Model Garden's QAT RetinaNet head, with activation ranges per pyramid level.

The RetinaNet head runs the same convolutions on every pyramid level. Model Garden's QAT head
(`RetinaNetHeadQuantized`) shares their fake-quantizers too: one activation range serves every
level, and its moving average is updated once per level and step, so it settles near the mean of
the levels' extremes. The levels differ by orders of magnitude (class logits, box tower
activations and depthwise outputs alike; docs/qat.md), so a shared range clips the finest level's
confident logits and strong activations, where the small objects are found, and flattens the
coarsest to zero. Post-training int8 calibrates every level's tensors on their own.

This head keeps the shared weights (and Model Garden's layout of them, so the float head's weights
copy over as before), and gives every level its own fake-quantizers for the depthwise outputs,
the activations and the predictions: the same ranges the TFLite converter then gives each level's
tensors.
"""

from __future__ import annotations

import functools
from typing import Any


def install() -> None:
    """Make Model Garden build this head wherever it builds a QAT RetinaNet (training, the
    evaluator's task, the QAT serving module). Idempotent."""
    from official.projects.qat.vision.modeling.heads import dense_prediction_heads as heads

    heads.RetinaNetHeadQuantized = _head_class()


def prediction_ranges(head: Any) -> dict[str, tuple[float, float]]:
    """The union of the pyramid levels' trained output ranges, for the class logits ("scores")
    and the box deltas ("boxes") of a built `LevelRangedRetinaNetHead`.

    TFLite's detection post-processing takes every level's predictions concatenated, and an int8
    concatenation has one scale. The converter requantizes the levels into the range of one of
    them: measured, level 7's logits range, which ends at 0.15 where level 3's
    reaches 1.0, so every level-3 score was capped at sigmoid(0.15) = 0.54. The export rounds
    each level into this union instead (see tfod.export.exporter)."""
    ranges: dict[str, tuple[float, float]] = {}
    for net, name in (("classnet", "scores"), ("boxnet", "boxes")):
        bounds = [level[net][1][1]._output_quantizer_vars for level in head._level_ranges]
        ranges[name] = (
            min(float(b["min_var"].numpy()) for b in bounds),
            max(float(b["max_var"].numpy()) for b in bounds),
        )
    return ranges


@functools.cache
def _separable_conv_class() -> type:
    import tensorflow_model_optimization as tfmot  # type: ignore[import-untyped]
    import tf_keras
    from official.projects.qat.vision.quantization import configs, helper

    wrap = tfmot.quantization.keras.QuantizeWrapperV2

    class SeparableConvWithoutRanges(helper.SeparableConv2DQuantized):  # type: ignore[misc]
        """Model Garden's quantized separable conv (weights fake-quantized, same variables),
        leaving its outputs to the head's per-level quantizers, which run between its two
        halves: the head calls `dw_conv` and `conv`, built here rather than on a first call."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            conv = dict(self._conv_kwargs)
            depthwise = {k: v for k, v in conv.items() if k != "filters"}
            self.dw_conv = wrap(
                tf_keras.layers.DepthwiseConv2D(
                    name="dw", **{**depthwise, "activation": None, "use_bias": False}
                ),
                configs.Default8BitConvQuantizeConfig(["depthwise_kernel"], [], False),
            )
            pointwise = {**conv, "kernel_size": (1, 1), "strides": (1, 1), "padding": "valid"}
            self.conv = wrap(
                tf_keras.layers.Conv2D(name="pw", **{**pointwise, "groups": 1}),
                configs.Default8BitConvQuantizeConfig(["kernel"], [], False),
            )

    return SeparableConvWithoutRanges


def _level_ranges(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Per pyramid level and net: each tower conv's (depthwise output range, activation), then
    the final conv's (depthwise output range, prediction range)."""
    import tensorflow_model_optimization as tfmot
    import tf_keras
    from official.modeling import tf_utils
    from official.projects.qat.vision.quantization import configs

    wrap = tfmot.quantization.keras.QuantizeWrapperV2

    def output_range(name: str) -> Any:
        return wrap(
            tf_keras.layers.Activation("linear", name=name),
            configs.Default8BitOutputQuantizeConfig(),
        )

    def activation(name: str) -> Any:
        function = tf_utils.get_activation(config["activation"], use_keras_layer=True)
        return wrap(
            tf_keras.layers.Activation(function.activation, name=name),
            configs.Default8BitActivationQuantizeConfig(),
        )

    return [
        {
            net: (
                [
                    (
                        output_range(f"{net}-conv_{i}-dw-range_{level}"),
                        activation(f"{net}-conv-activation_{level}_{i}"),
                    )
                    for i in range(config["num_convs"])
                ],
                (output_range(f"{final}-dw-range_{level}"), output_range(f"{final}-range_{level}")),
            )
            for net, final in (("classnet", "scores"), ("boxnet", "boxes"))
        }
        for level in range(config["min_level"], config["max_level"] + 1)
    ]


@functools.cache
def _head_class() -> type:
    from official.projects.qat.vision.modeling.heads import dense_prediction_heads as heads
    from official.projects.qat.vision.quantization import helper

    base = heads.RetinaNetHeadQuantized  # Model Garden's: read once, before install() replaces it

    class LevelRangedRetinaNetHead(base):  # type: ignore[misc,valid-type]
        """`RetinaNetHeadQuantized` with one set of activation ranges per pyramid level."""

        def build(self, input_shape: Any) -> None:
            original = helper.SeparableConv2DQuantized
            helper.SeparableConv2DQuantized = _separable_conv_class()
            try:  # the shared convs and per-level norms, in Model Garden's order
                super().build(input_shape)
            finally:
                helper.SeparableConv2DQuantized = original
            self._level_ranges = _level_ranges(self._config_dict)

        def call(self, features: Any) -> Any:
            config = self._config_dict
            scores: dict[str, Any] = {}
            boxes: dict[str, Any] = {}
            for i, level in enumerate(range(config["min_level"], config["max_level"] + 1)):
                for net, convs, norms, final, out in (
                    ("classnet", self._cls_convs, self._cls_norms[i], self._classifier, scores),
                    ("boxnet", self._box_convs, self._box_norms[i], self._box_regressor, boxes),
                ):
                    tower, (final_dw_range, final_range) = self._level_ranges[i][net]
                    x = features[str(level)]
                    for conv, norm, (dw_range, act) in zip(convs, norms, tower, strict=True):
                        x = act(norm(conv.conv(dw_range(conv.dw_conv(x)))))
                    out[str(level)] = final_range(final.conv(final_dw_range(final.dw_conv(x))))
            return scores, boxes, {}

    return LevelRangedRetinaNetHead
