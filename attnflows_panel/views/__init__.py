"""The Panel/Bokeh views. Importing this package installs :mod:`.bokeh_speedups` (Bokeh's per-model
property machinery, memoised; ``ATTNFLOWS_BOKEH_SPEEDUPS=0`` turns it off)."""

from attnflows_panel.views import bokeh_speedups as _bokeh_speedups

_bokeh_speedups.install()
