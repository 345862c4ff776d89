"""Datasets: the procedural Shapes dataset (`shapes`) and its TFDS builder (`shapes_tfds`)."""
