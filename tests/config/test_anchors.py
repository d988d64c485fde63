"""Anchor fitting on synthetic box statistics."""

from __future__ import annotations

import numpy as np

from tfod.config.anchors import (
    anchor_shapes,
    fit_anchors,
    fit_yolo_anchors,
    kmeans_ratios,
    score,
    yolo_score,
)

MOBILE = {"anchor_size": 3.0, "ratios": (0.5, 1.0, 2.0), "num_scales": 3}  # retinanet_mobile_coco


def boxes(rng: np.random.Generator, n: int, sides: tuple[float, float], ratio: float) -> np.ndarray:
    """n boxes whose geometric-mean side is in `sides` and whose w/h is near `ratio`."""
    side = rng.uniform(*sides, n)
    r = ratio * np.exp(rng.normal(0, 0.05, n))
    return np.stack([side * r**0.5, side * r**-0.5], axis=1)


def test_kmeans_finds_the_aspect_ratios_the_boxes_have() -> None:
    rng = np.random.default_rng(0)
    data = np.concatenate([boxes(rng, 300, (40, 80), r) for r in (0.25, 1.0, 4.0)])
    found = kmeans_ratios(data)
    assert len(found) == 3
    for got, want in zip(found, (0.25, 1.0, 4.0), strict=True):
        assert abs(np.log(got / want)) < 0.1


def test_anchor_shapes_follow_model_gardens_formula() -> None:
    shapes = anchor_shapes(4.0, (1.0, 2.0), num_scales=2, min_level=3, max_level=3)
    # level 3: 4 * 8 = 32 px, then 32 * 2**0.5; ratio 2: w = s * 2**0.5, h = s / 2**0.5.
    expected = [(32, 32), (32 * 2**0.5, 32 / 2**0.5), (32 * 2**0.5, 32 * 2**0.5), (64, 32)]
    np.testing.assert_allclose(shapes, expected, rtol=1e-9)


def test_long_thin_boxes_get_anchors_that_cover_them() -> None:
    rng = np.random.default_rng(1)
    data = np.concatenate([boxes(rng, 400, (30, 60), 5.0), boxes(rng, 400, (30, 60), 0.2)])
    default, fitted = fit_anchors(data, 3, 6, **MOBILE)
    assert default.aspect_ratios == (0.5, 1.0, 2.0) and default.anchor_size == 3.0
    assert default.recall < 0.5  # ratios 0.5-2 cannot reach IoU 0.5 with 5:1 boxes
    assert fitted.recall > 0.95
    assert min(fitted.aspect_ratios) < 0.3 and max(fitted.aspect_ratios) > 3.5


def test_small_objects_get_smaller_anchors() -> None:
    rng = np.random.default_rng(2)
    data = boxes(rng, 500, (8, 16), 1.0)  # below level 3's smallest anchor (3 x 8 = 24 px)
    default, fitted = fit_anchors(data, 3, 6, **MOBILE)
    assert fitted.anchor_size < 3.0
    assert fitted.recall > default.recall + 0.3
    assert score(data, anchor_shapes(fitted.anchor_size, fitted.aspect_ratios, 3, 3, 6))[0] == (
        fitted.recall
    )


def test_coco_like_boxes_keep_the_coco_anchors_score() -> None:
    rng = np.random.default_rng(3)
    data = np.concatenate([boxes(rng, 300, (40, 200), r) for r in (0.5, 1.0, 2.0)])
    default, fitted = fit_anchors(data, 3, 7, anchor_size=4.0, ratios=(0.5, 1.0, 2.0), num_scales=3)
    assert default.recall > 0.95
    assert fitted.recall >= default.recall


def test_yolo_anchors_fitted_to_small_boxes_match_them_all() -> None:
    rng = np.random.default_rng(4)
    data = np.concatenate([boxes(rng, 300, (2, 4), r) for r in (0.5, 1.0, 2.0)])
    coco = [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198],
            [373, 326]]  # fmt: skip
    default, fitted = fit_yolo_anchors(data, coco)
    # YOLO matches a box to an anchor whose sides are both within 4x of its own.
    assert default.recall < 0.5 and fitted.recall == 1.0
    assert len(fitted.boxes) == 9
    areas = [w * h for w, h in fitted.boxes]
    assert areas == sorted(areas)  # smallest first: Model Garden gives them to levels 3, 4, 5
    assert yolo_score(data, np.asarray(fitted.boxes)) == (fitted.recall, fitted.fit)
    assert fitted.override()["boxes"][0] == {"box": list(fitted.boxes[0])}
