"""Training on Model Garden's own trainer: progress, clean stop and resume, fine-tuning."""
