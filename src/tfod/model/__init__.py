"""The detector itself, below training, evaluation, prediction and export: a run's experiment
read back, its weights read in, its quantized twin and its serving modules."""
