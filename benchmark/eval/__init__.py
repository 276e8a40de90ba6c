"""Scoring: SER, ASR and SED-captioning metrics as aggregates of per-utterance scores, the paired
statistics that compare runs, and prediction with a trained system."""
