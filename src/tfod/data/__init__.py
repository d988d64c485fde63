"""Datasets: readers for VOC, COCO, YOLO and CSV annotations, checks, TFRecord writing."""
