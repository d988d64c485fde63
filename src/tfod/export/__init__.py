"""Export a run to SavedModel and TFLite, and verify every artefact."""
