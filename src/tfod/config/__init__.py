"""tfod.yaml: the user schema, presets, and their mapping onto Model Garden experiment configs."""
