"""COCO evaluation of checkpoints: one-off, continuous (--watch) and inline during training."""
