"""Explanations of a trained system's emotion decisions, in words and with evidence.

- descriptor faithfulness (`faithfulness.py`): whether what a generated descriptor says about the
  voice (pitch, energy, speed, gender) agrees with the utterance's measured acoustic cues;
- time saliency of the decision (`saliency.py`, on the one timeline of `timeline.py`): which
  windows of the original audio drove it;
- saliency-linked cues (`evidence.py`, `expert_cues.py`): what the voice does inside those windows,
  against the speaker's baseline and expert-referenced directions per emotion;
- the deletion test (`deletion.py`) and the quality metrics of a system's explanations, from
  one record per utterance (`quality.py`);
- the pictures (`figure.py`).
"""
