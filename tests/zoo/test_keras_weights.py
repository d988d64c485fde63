"""Keras Applications' ImageNet weights mapped into Model Garden's backbone: the mapping proven on
random weights (the two networks' feature maps agree), and a fine-tune that starts from a weights
file served like Keras's bucket serves it, made here with Keras's own `save_weights`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import smoke_config
from tests.helpers import run_tfod
from tests.zoo.server import serve
from tfod.errors import TfodError
from tfod.zoo import catalog
from tfod.zoo.keras_weights import convert, copy_weights, networks

NAME = "mobilenetv2-imagenet-keras"
ENTRY = catalog.ZOO[NAME]
# Where Keras's own layers end each pyramid level of Model Garden's MobileNetV2 (levels 2-5, and
# the last 1x1 convolution, which Model Garden returns as level 6).
ENDPOINTS = {
    "2": "block_2_add", "3": "block_5_add", "4": "block_12_add", "5": "block_16_project_BN",
    "6": "out_relu",
}  # fmt: skip
RELATIVE_TOLERANCE = 1e-5  # of the largest activation; measured: copied maps are bit-identical
# The converted backbone's level-2 features on average, relative (measured 0.001-0.005 on random
# weights; 0.38 without folding the input scaling into the first convolution).
LEVEL2_MEAN_ERROR = 0.02
# ResNet-50's features on average, relative, on random weights (see its test).
RESNET_MEAN_ERROR = 0.05


def _randomise(model: Any, seed: int) -> None:
    """Random weights everywhere, batch-norm statistics included (untrained ones are 0 and 1,
    under which a swapped mean and variance would go unseen). ResNet's kernels are scaled by
    their fan-in: its 16 residual blocks would otherwise overflow float32."""
    import tf_keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = [rng.normal(0, 0.3, w.shape).astype("float32") for w in layer.get_weights()]
        if model.name == "resnet50" and isinstance(layer, tf_keras.layers.Conv2D):
            values[0] *= np.float32(1 / np.sqrt(np.prod(values[0].shape[:3])))
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            values[0] = rng.uniform(0.5, 1.5, values[0].shape).astype("float32")
            values[3] = rng.uniform(0.5, 2.0, values[3].shape).astype("float32")
        layer.set_weights(values)


def _keras_weights(path: Path, width: float, seed: int = 0, model: str = "MobileNetV2") -> Any:
    """A Keras `model` with random weights, saved as Keras Applications publishes its own."""
    keras, _ = networks(model, width)
    _randomise(keras, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    keras.save_weights(str(path))
    return keras


def _features(keras: Any, images: np.ndarray) -> dict[str, np.ndarray]:
    import tf_keras

    outputs = [keras.get_layer(name).output for name in ENDPOINTS.values()]
    maps = tf_keras.Model(keras.input, outputs)(images, training=False)
    return {level: m.numpy() for level, m in zip(ENDPOINTS, maps, strict=True)}


def _assert_same_features(keras: Any, backbone: Any, side: int) -> None:
    images = np.random.default_rng(1).uniform(-1, 1, (2, side, side, 3)).astype("float32")
    theirs = _features(keras, images)
    ours = {level: m.numpy() for level, m in backbone(images, training=False).items()}
    for level, expected in theirs.items():
        assert ours[level].shape == expected.shape, level
        scale = float(np.abs(expected).max())
        np.testing.assert_allclose(ours[level], expected, rtol=0, atol=RELATIVE_TOLERANCE * scale)


def _assert_takes_normalised_pixels(keras: Any, backbone: Any, side: int) -> None:
    """Keras's network on pixels scaled to -1..1 and the converted backbone on Model Garden's
    ImageNet-normalised pixels: the first block agrees inside the image (its bottom row and right
    column read the padding), the level-2 features on average (the edge's effect spreads)."""
    import tf_keras
    from official.vision.ops.preprocess_ops import MEAN_NORM, STDDEV_NORM

    pixels = np.random.default_rng(2).uniform(0, 1, (2, side, side, 3)).astype("float32")
    scaled = 2 * pixels - 1
    normalised = (pixels - np.float32(MEAN_NORM)) / np.float32(STDDEV_NORM)
    theirs = tf_keras.Model(keras.input, keras.get_layer("Conv1_relu").output)(scaled).numpy()
    ours = tf_keras.Model(backbone.input, backbone.layers[1].output)(normalised).numpy()
    scale = float(np.abs(theirs).max())
    np.testing.assert_allclose(
        ours[:, :-1, :-1], theirs[:, :-1, :-1], rtol=0, atol=RELATIVE_TOLERANCE * scale
    )
    level2 = _features(keras, scaled)["2"]
    error = np.abs(backbone(normalised, training=False)["2"].numpy() - level2).mean()
    assert error / np.abs(level2).mean() < LEVEL2_MEAN_ERROR


@pytest.mark.parametrize(("width", "side"), [(0.35, 64), (1.0, 128)])
def test_keras_and_model_gardens_mobilenetv2_compute_the_same_features(
    width: float, side: int, tmp_path: Path
) -> None:
    keras = _keras_weights(tmp_path / "weights.h5", width)
    _, backbone = networks("MobileNetV2", width)
    copy_weights(keras, backbone)
    _assert_same_features(keras, backbone, side)


def test_the_conversion_makes_the_backbone_take_model_gardens_pixels(tmp_path: Path) -> None:
    import tensorflow as tf

    keras = _keras_weights(tmp_path / "weights.h5", 0.35)
    prefix = convert(tmp_path / "weights.h5", "MobileNetV2", 0.35, tmp_path / "ckpt")
    _, backbone = networks("MobileNetV2", 0.35)
    status = tf.train.Checkpoint(backbone=backbone).read(str(prefix))
    status.assert_existing_objects_matched().assert_consumed()
    _assert_takes_normalised_pixels(keras, backbone, 64)


def test_on_an_odd_side_the_padding_conventions_give_other_sizes(tmp_path: Path) -> None:
    """Keras's network built for any side (as the conversion builds it) pads a stride-2 layer
    (0, 1) where "same" pads an odd side (1, 1): the maps differ in size. tfod's inputs are
    multiples of 2**max_level, so no stride-2 layer ever sees an odd side."""
    keras = _keras_weights(tmp_path / "weights.h5", 0.35)
    _, backbone = networks("MobileNetV2", 0.35)
    copy_weights(keras, backbone)
    images = np.zeros((1, 97, 97, 3), "float32")
    assert _features(keras, images)["3"].shape[1] == 12
    assert backbone(images)["3"].shape[1] == 13


def _interior(maps: np.ndarray, low: int, high: int) -> np.ndarray:
    return maps[:, low:high, low:high]


def test_keras_resnet50_maps_exactly_up_to_v1_and_its_padding(tmp_path: Path) -> None:
    """Biases folded into the batch norms and the epsilon rescaled are exact: on the image padded
    by one pixel (the grid shift of the stem's padding), Model Garden's level-2 features are
    Keras's to RELATIVE_TOLERANCE, away from the bottom and right edges (where "same" padding
    reads the extra row). On the image itself every level comes out the same size and close:
    Keras strides each downsampling block's 1x1 convolution (ResNet v1), Model Garden its 3x3
    (v1.5), which random weights barely show (their residual paths dominate: measured 0.015 at
    level 2, the grid shift, and 0.001-0.003 at levels 3-5, relative); the pretrained bench
    measures it on trained weights."""
    import tf_keras

    keras = _keras_weights(tmp_path / "resnet.h5", 1.0, model="ResNet50")
    _, backbone = networks("ResNet50", 1.0)
    assert copy_weights(keras, backbone) == 106  # 53 convolutions, 53 batch norms
    images = np.random.default_rng(1).uniform(-1, 1, (2, 128, 128, 3)).astype("float32")
    names = ["conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"]
    outputs = [keras.get_layer(name).output for name in names]
    theirs = [m.numpy() for m in tf_keras.Model(keras.input, outputs)(images, training=False)]
    shifted = backbone(np.pad(images, [(0, 0), (1, 1), (1, 1), (0, 0)]), training=False)["2"]
    scale = float(np.abs(theirs[0]).max())
    np.testing.assert_allclose(
        _interior(shifted.numpy(), 0, 28), _interior(theirs[0], 0, 28),
        rtol=0, atol=RELATIVE_TOLERANCE * scale,
    )  # fmt: skip
    ours = backbone(images, training=False)
    for level, expected in zip("2345", theirs, strict=True):
        assert ours[level].shape == expected.shape, level
        error = np.abs(ours[level].numpy() - expected).mean() / np.abs(expected).mean()
        assert error < RESNET_MEAN_ERROR, (level, error)


def test_the_resnet50_conversion_takes_model_gardens_pixels_for_caffes(tmp_path: Path) -> None:
    """Keras's ResNet on caffe pixels (BGR, 0..255 less the mean pixel), the converted backbone
    on Model Garden's normalised RGB: the stem agrees inside the image on the shifted grid."""
    import tensorflow as tf
    import tf_keras
    from official.vision.ops.preprocess_ops import MEAN_NORM, STDDEV_NORM

    from tfod.zoo.keras_weights import CAFFE_MEAN_RGB

    keras = _keras_weights(tmp_path / "resnet.h5", 1.0, model="ResNet50")
    prefix = convert(tmp_path / "resnet.h5", "ResNet50", 1.0, tmp_path / "ckpt")
    _, backbone = networks("ResNet50", 1.0)
    status = tf.train.Checkpoint(backbone=backbone).read(str(prefix))
    status.assert_existing_objects_matched().assert_consumed()
    pixels = np.random.default_rng(2).uniform(0, 1, (2, 64, 64, 3)).astype("float32")
    caffe = (255 * pixels - np.float32(CAFFE_MEAN_RGB))[..., ::-1]
    normalised = (pixels - np.float32(MEAN_NORM)) / np.float32(STDDEV_NORM)
    theirs = tf_keras.Model(keras.input, keras.get_layer("conv1_relu").output)(caffe).numpy()
    stem = tf_keras.Model(backbone.input, backbone.layers[3].output)
    ours = stem(np.pad(normalised, [(0, 0), (1, 1), (1, 1), (0, 0)])).numpy()
    scale = float(np.abs(theirs).max())
    np.testing.assert_allclose(
        _interior(ours, 2, 30), _interior(theirs, 2, 30), rtol=0, atol=RELATIVE_TOLERANCE * scale
    )


def test_weights_of_another_width_or_no_weights_at_all_are_named(tmp_path: Path) -> None:
    _keras_weights(tmp_path / "narrow.h5", 0.35)
    with pytest.raises(TfodError, match="not Keras Applications' MobileNetV2 weights at width 1"):
        convert(tmp_path / "narrow.h5", "MobileNetV2", 1.0, tmp_path / "a")
    (tmp_path / "page.h5").write_text("<html>not found</html>")
    with pytest.raises(TfodError, match=r"page\.h5") as raised:
        convert(tmp_path / "page.h5", "MobileNetV2", 1.0, tmp_path / "b")
    assert "not Keras Applications' MobileNetV2 weights" in str(raised.value)
    assert not list(tmp_path.glob("[ab]/*"))


@pytest.mark.slow
def test_a_fine_tune_starts_from_keras_imagenet_weights_served_by_their_publisher(
    demo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The real download code against a local server laid out like Keras's bucket; the run's
    backbone starts from the Keras network's weights, converted."""
    import yaml

    from tfod.model.experiment import load_experiment
    from tfod.runs.rundir import RunDir
    from tfod.train import finetune
    from tfod.train.task import TfodRetinaNetTask
    from tfod.train.trainer import train

    bucket = tmp_path / "bucket"
    keras = _keras_weights(bucket / ENTRY.url.removeprefix(catalog.GCS), 1.0)
    state, httpd = serve(bucket)
    monkeypatch.setenv("TFOD_ZOO_MIRROR", state.url)
    monkeypatch.setenv("TFOD_CACHE", str(tmp_path / "cache"))
    try:
        config = tmp_path / "tfod.yaml"
        code, output = run_tfod(
            ["init", "--data", str(demo_data), "--out", str(config), "--pretrained", NAME], capfd
        )
        assert code == 0, output
        written = yaml.safe_load(config.read_text())["model"]
        assert written == {
            "preset": ENTRY.preset, "init_checkpoint": f"zoo:{NAME}", "init_modules": "backbone"
        }  # fmt: skip
        assert "ImageNet top-1 71.3" in config.read_text()
        run = smoke_config(
            demo_data, name="keras-start", model=written, train={"steps": 1, "batch_size": 2}
        )
        result = train(run, tmp_path / "runs", inline_eval=False, progress=False)
    finally:
        httpd.shutdown()
    started = RunDir(result.run.path).read()["initialized_from"]
    assert started["source"]["url"] == ENTRY.url
    assert started["report"]["backbone"]["action"] == "restored"
    assert started["report"]["decoder"]["action"] == "random init"

    experiment = load_experiment(RunDir(result.run.path))
    model = TfodRetinaNetTask(experiment.task).build_model()
    finetune.restore(model, finetune.plan_restore(f"zoo:{NAME}", ["backbone"], None))
    _assert_takes_normalised_pixels(keras, model.backbone, experiment.task.model.input_size[0])


@pytest.mark.slow
def test_zoo_add_converts_keras_resnet50_weights_into_the_resnet_preset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A copy of Keras's ResNet-50 file: converted, restored into retinanet-resnet50-fpn-640's
    backbone, cached. MobileNetV2's file under its name before it: refused, nothing recorded."""
    monkeypatch.setenv("TFOD_CACHE", str(tmp_path / "cache"))
    name = "resnet50-imagenet-keras"
    _keras_weights(tmp_path / "mobilenet.h5", 1.0)
    code, output = run_tfod(["zoo", "add", name, "--from", str(tmp_path / "mobilenet.h5")], capfd)
    assert code == 1 and "not Keras Applications' ResNet50 weights" in output, output
    _keras_weights(tmp_path / "resnet.h5", 1.0, model="ResNet50")
    code, output = run_tfod(["zoo", "add", name, "--from", str(tmp_path / "resnet.h5")], capfd)
    assert code == 0, output
    assert f"Restored into {catalog.ZOO[name].preset}" in output
    assert f"Cached zoo:{name}" in output
