"""Config helpers shared by the files in `experiments/`."""
