"""Explanations: descriptor faithfulness, whether what a generated descriptor says about the voice
(pitch, energy, speed, gender) agrees with the utterance's measured acoustic cues."""
