"""Explanations: descriptor faithfulness, whether what a generated descriptor says about the voice
(pitch, energy, speed, gender) agrees with the utterance's measured acoustic cues; time saliency of
the emotion decision on the original audio's timeline (`saliency`), onto which encoder frames,
adapter tokens and eGeMAPS frames map (`timeline`)."""
