"""Detections from any tfod model: checkpoints, SavedModels and TFLite files."""
