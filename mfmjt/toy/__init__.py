"""The synthetic toy domain: scenes, offline encoders and codec, metrics, and its own extract/evaluate."""
