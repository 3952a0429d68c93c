"""The synthetic toy domain: scenes, offline encoders and codec, metrics, and its own extract/evaluate.

- scenes: :mod:`~mfmjt.toy.vocabulary` (colours, shapes, materials, words), :mod:`~mfmjt.toy.specs`
  (configs and results), :mod:`~mfmjt.toy.layout` (random content), :mod:`~mfmjt.toy.physics`,
  :mod:`~mfmjt.toy.sound`, :mod:`~mfmjt.toy.captions`, :mod:`~mfmjt.toy.render` (frames, mp4),
  :mod:`~mfmjt.toy.scene` (``make_scene``), :mod:`~mfmjt.toy.onsets`;
- features: :mod:`~mfmjt.toy.encoders`, :mod:`~mfmjt.toy.codec`, :mod:`~mfmjt.toy.stack` (the
  ``"offline"`` feature kind);
- data and scores: :mod:`~mfmjt.toy.extract` (feature stores), :mod:`~mfmjt.toy.metrics`,
  :mod:`~mfmjt.toy.evaluate`, and :mod:`~mfmjt.toy.cli` (``mfmjt toy extract | evaluate | scene``).
"""
