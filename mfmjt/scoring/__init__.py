"""Scoring generated audio in the paper's metrics (FAD, FD, KL, IS, IB-score, CLAP, DeSync, RTF)."""
