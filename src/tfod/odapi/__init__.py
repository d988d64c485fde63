"""Coming from the TensorFlow Object Detection API: its pipeline.config and TFRecords, imported."""
