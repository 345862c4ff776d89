"""Evaluations: a programmatic Shapes detector (`detector`) and GenEval-style / QA scoring (`geneval`)."""
