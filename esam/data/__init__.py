"""Data pipelines shared by pretraining and fine-tuning (augmented views, datasets)."""
