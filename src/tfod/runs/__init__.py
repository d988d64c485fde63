"""Run folders: the contract shared by trainer, evaluator, TensorBoard and exporter."""
