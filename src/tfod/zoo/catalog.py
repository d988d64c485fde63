"""The published checkpoints tfod can start from, each tied to the preset whose model matches it.

Sources (tensorflow/models): `official/vision/MODEL_GARDEN.md` (RetinaNet tables) and
`official/projects/qat/vision/README.md` (the MobileNetV2 "SSD" RetinaNet, float and QAT); the
architectures are those of the experiment YAMLs the checkpoints were trained with
(`official/projects/qat/vision/configs/experiments/retinanet/coco_mobilenetv2_qat_tpu_e2e.yaml`,
`official/vision/configs/experiments/retinanet/coco_spinenet49_mobile_tpu.yaml`, ...). The
archives' sha256 are not published: the first download records it in the cache manifest, and
every later use checks against that record (a `sha256` here pins it for everyone).

An entry may name other hosts serving the very same file (`mirrors`), tried in order after the
publisher's URL when it refuses or fails; a team's own mirror (`tfod zoo pack`, $TFOD_ZOO_MIRROR)
replaces them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from tfod.errors import TfodError

GCS = "https://storage.googleapis.com/"
KERAS = GCS + "tensorflow/keras-applications/"  # Keras Applications' own bucket


@dataclass(frozen=True)
class ZooEntry:
    """A published checkpoint.

    Args:
        name: what users write (`zoo:NAME`, `tfod init --pretrained NAME`).
        preset: the tfod preset whose model matches the checkpoint variable for variable.
        coco_ap: COCO box AP as published (or ImageNet top-1 for a backbone).
        restores: "detector" (backbone, decoder and head) or "backbone".
        url: where it is published (`gs://B/P` is served at https://storage.googleapis.com/B/P).
            Its path is also where a mirror holds the file (`TFOD_ZOO_MIRROR/PATH`).
        kind: "tar.gz" (a folder holding ckpt-N.index and ckpt-N.data-*), "prefix" (the URL of
            a checkpoint prefix: its .index and .data-00000-of-00001 are fetched) or "keras-h5"
            (Keras Applications' weights of the network `keras` names, converted into Model
            Garden's backbone once fetched: `tfod.zoo.keras_weights`).
        note: one line for `tfod zoo list`.
        sha256: the archive's sha256 when pinned; None: recorded on first download.
        unpacked_bytes: the checkpoint's size unpacked, when known: an archive unpacking to
            more than 1.1x this is refused.
        mirrors: other URLs serving the same file, tried in order after `url`.
        keras: for a "keras-h5" entry, the Keras Applications network and its width.
        also_fits: other presets with the same backbone, that a "backbone" entry starts too.
    """

    name: str
    preset: str
    coco_ap: float
    restores: str
    url: str
    kind: str = "tar.gz"
    note: str = ""
    sha256: str | None = None
    unpacked_bytes: int | None = None
    mirrors: tuple[str, ...] = ()
    keras: tuple[str, float] | None = None
    also_fits: tuple[str, ...] = ()

    def fits(self, preset: str) -> bool:
        return preset in (self.preset, *self.also_fits)

    @property
    def https_url(self) -> str:
        return https(self.url)

    @property
    def sources(self) -> tuple[str, ...]:
        """Every URL serving the file, the publisher's first."""
        return tuple(https(url) for url in (self.url, *self.mirrors))


def suffixes(kind: str) -> list[str]:
    """What is appended to an entry's URL to name each of its published files."""
    return [".index", ".data-00000-of-00001"] if kind == "prefix" else [""]


def https(url: str) -> str:
    """`gs://BUCKET/PATH` -> its public https URL; other URLs unchanged."""
    return GCS + url[len("gs://") :] if url.startswith("gs://") else url


ZOO = {
    entry.name: entry
    for entry in [
        ZooEntry(
            "retinanet-mobilenetv2-256-coco", "retinanet-mobilenetv2-ssd-256", 23.3, "detector",
            GCS + "tf_model_garden/vision/qat/mobilenetv2_ssd_coco/mobilenetv2_ssd_i256_ckpt.tar.gz",
            note="phones and Edge TPU; the float parent of the QAT entry",
        ),
        ZooEntry(
            "retinanet-mobilenetv2-256-coco-qat", "retinanet-mobilenetv2-ssd-256", 21.7, "detector",
            GCS + "tf_model_garden/vision/qat/mobilenetv2_ssd_coco/mobilenetv2_ssd_i256_qat_ckpt.tar.gz",
            note="quantization-aware trained; AP as an int8 TFLite",
        ),
        ZooEntry(
            "retinanet-spinenet49-mobile-384-coco", "retinanet-spinenet49-mobile-384", 28.1,
            "detector", GCS + "tf_model_garden/vision/retinanet/spinenet49mobile.tar.gz",
            note="Model Garden's mobile detector",
        ),
        ZooEntry(
            "retinanet-resnet50-fpn-640-coco", "retinanet-resnet50-fpn-640", 36.8, "detector",
            GCS + "tf_model_garden/vision/retinanet/retinanet-resnet50fpn.tar.gz",
            note="servers and GPUs",
        ),
        ZooEntry(
            "resnet50-imagenet", "retinanet-resnet50-fpn-640", 76.0, "backbone",
            "gs://cloud-tpu-checkpoints/vision-2.0/resnet50_imagenet/ckpt-28080", kind="prefix",
            note="ImageNet backbone only (top-1 76+); decoder and head start random",
            also_fits=("fasterrcnn-resnet50-fpn-640", "maskrcnn-resnet50-fpn-640"),
        ),
        ZooEntry(
            "mobilenetv2-imagenet-keras", "retinanet-mobilenetv2-256", 71.3, "backbone",
            KERAS + "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
            kind="keras-h5", keras=("MobileNetV2", 1.0),
            note="ImageNet backbone from Keras Applications (another publisher and bucket); "
            "fits every MobileNetV2 preset",
        ),
        ZooEntry(
            "resnet50-imagenet-keras", "retinanet-resnet50-fpn-640", 74.9, "backbone",
            KERAS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            kind="keras-h5", keras=("ResNet50", 1.0),
            note="ImageNet backbone from Keras Applications: ResNet v1 weights in Model "
            "Garden's v1.5, the fallback when resnet50-imagenet cannot be fetched",
            also_fits=("fasterrcnn-resnet50-fpn-640", "maskrcnn-resnet50-fpn-640"),
        ),
    ]
}  # fmt: skip


def get_entry(name: str) -> ZooEntry:
    """The zoo entry `name`, or a TfodError listing them."""
    try:
        return ZOO[name]
    except KeyError:
        raise TfodError(
            f"no zoo entry {name!r}; `tfod zoo list` shows them: {', '.join(ZOO)}"
        ) from None
