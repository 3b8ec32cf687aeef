"""The Attention Flows app: the views of one sentence pair next to a searchable corpus (§4 + future work).

A package whose modules name their jobs:

- :mod:`~attnflows_panel.app.config`: :class:`AppConfig`, what a server serves (models, index, τ);
- :mod:`~attnflows_panel.app.url_state`: :class:`UrlState`, the shareable state in the page's URL;
- :mod:`~attnflows_panel.app.cards`: the HTML pieces (help, model pair, sample card, notices), with
  every user, URL or corpus text escaped;
- :mod:`~attnflows_panel.app.history`: :class:`~attnflows_panel.app.history.BrowserHistory`, the address
  bar (a history entry per discrete change, in place for τ and the level) and Back / Forward;
- :mod:`~attnflows_panel.app.training`: the pairs the fine-tuned model was trained on, and its accuracy
  on the held-out pairs;
- :mod:`~attnflows_panel.app.page`: the page of a session (widgets, sidebar, template, notices);
- :mod:`~attnflows_panel.app.session`: :class:`AttnFlowsApp`, one user's session (a ``Viewer``), the one
  owner of the sample shown;
- :mod:`~attnflows_panel.app.server`: :func:`serve`, :func:`make_app`, :func:`preload`;
- ``app.py``: the script for ``panel serve attnflows_panel/app/app.py`` (configured by ``ATTNFLOWS_*``
  variables).

Ways to run it (README.md, "Serving the app")::

    attnflows demo                                    # offline default, prepared once
    attnflows serve --index index/mrpc-dev --port 5006
    panel serve attnflows_panel/app/app.py            # configured by ATTNFLOWS_* variables

and in a notebook::

    from attnflows_panel.app import AttnFlowsApp
    AttnFlowsApp(pair=pair, index=idx)                # a cell output; .template() for the full page
"""

from __future__ import annotations

from attnflows_panel import DEFAULT_TAU, PAPER_TAU
from attnflows_panel.app.cards import HELP_HTML
from attnflows_panel.app.config import MAX_CHARS, AppConfig, demo_index_path, model_label, model_task
from attnflows_panel.app.server import ServerThread, make_app, preload, serve
from attnflows_panel.app.session import AttnFlowsApp
from attnflows_panel.app.url_state import UrlState
from attnflows_panel.defaults import initial_tau
from attnflows_panel.views.attention_flows import MODE_LABELS, MODES, TAU_BOUNDS

__all__ = ["AppConfig", "AttnFlowsApp", "UrlState", "make_app", "preload", "serve", "ServerThread",
           "demo_index_path", "model_label", "model_task", "MODES", "MODE_LABELS", "TAU_BOUNDS", "HELP_HTML",
           "DEFAULT_TAU", "PAPER_TAU", "initial_tau", "MAX_CHARS"]
