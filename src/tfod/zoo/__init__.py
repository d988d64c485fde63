"""The zoo: Model Garden's published COCO detectors (and an ImageNet backbone) as starting points,
downloaded (resumable), checked (sha256) and cached once under $TFOD_CACHE."""
