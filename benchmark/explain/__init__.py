"""Explanations: acoustic cues, descriptor faithfulness, saliency-linked cue reports."""
