"""The Panel views: the radial Attention Flow view (one ``JSComponent``, :mod:`.radial`), the Bokeh
sentence and context views, the corpus browser and the head panel. Importing this package changes no
other library (nothing is patched)."""
