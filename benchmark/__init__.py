"""Benchmark suite for LLM-based explainable speech emotion recognition.

Reproduces "Towards LLM-Empowered Fine-Grained Speech Descriptors for Explainable Emotion
Recognition" (Chen et al., 2025) and extends it with cue-level explanations.
"""

__version__ = "0.1.0"
