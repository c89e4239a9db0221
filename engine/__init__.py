"""Orchestration: video decoding, optical flow, model loading, explanation runs and their outputs."""
