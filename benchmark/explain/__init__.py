"""Explanations: descriptor faithfulness, whether what a generated descriptor says about the voice
(pitch, energy, speed, gender) agrees with the utterance's measured acoustic cues; and
saliency-linked cues, what the voice does inside the salient windows against expert-referenced
directions per emotion (`evidence.py`, `expert_cues.py`)."""
