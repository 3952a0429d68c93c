"""Real-data stores and extraction: MMAudio-layout feature directories, store mixes, media extraction."""
