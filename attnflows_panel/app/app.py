"""The script for ``panel serve attnflows_panel/app/app.py`` (served at ``/app``).

Configured by ``ATTNFLOWS_*`` environment variables (:meth:`attnflows_panel.app.config.AppConfig.from_env`);
``attnflows serve`` and ``attnflows demo`` are the usual way to start the app (README.md). Imported
rather than served, it does nothing.
"""

import panel as pn

if pn.state.served:
    from attnflows_panel.app.server import extensions
    from attnflows_panel.app.session import AttnFlowsApp

    extensions()
    AttnFlowsApp.from_env().template().servable(title="Attention Flows")
