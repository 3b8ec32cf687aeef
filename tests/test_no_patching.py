"""Nothing in the package replaces an attribute of another library (issue #24, DESIGN.md: "no dependency
is patched"): in a fresh interpreter, Bokeh's, Panel's, HoloViews' and param's module functions and
classes, and the functions of their classes, are the same objects before and after importing
attnflows_panel, attnflows_panel.views (every module) and the app, and after building a view."""

from __future__ import annotations

import json
import subprocess
import sys

_SCRIPT = r"""
import json, sys, types
import bokeh, bokeh.core.has_props, bokeh.core.property.descriptors, bokeh.core.property.bases
import bokeh.document, bokeh.model, bokeh.models, bokeh.embed, bokeh.core.serialization, bokeh.util.callback_manager
import panel, panel.custom, panel.io.datamodel, panel.reactive, panel.viewable, panel.pane, panel.layout
import holoviews, param

LIBS = ("bokeh", "panel", "holoviews", "param")

def snapshot():
    out = {}
    for name, mod in list(sys.modules.items()):
        if not isinstance(mod, types.ModuleType) or name.split(".")[0] not in LIBS:
            continue
        for attr, val in list(vars(mod).items()):
            if isinstance(val, (types.FunctionType, type)) and getattr(val, "__module__", None) == name:
                out[f"{name}.{attr}"] = (id(val), val.__qualname__)
                if isinstance(val, type):
                    for k, v in list(vars(val).items()):
                        f = getattr(v, "__func__", v)
                        if isinstance(f, types.FunctionType):
                            out[f"{name}.{attr}.{k}"] = (id(f), f.__module__, f.__qualname__)
    return out

before = snapshot()
import attnflows_panel, attnflows_panel.views
import pkgutil, importlib
for m in pkgutil.walk_packages(attnflows_panel.views.__path__, "attnflows_panel.views."):
    importlib.import_module(m.name)
import attnflows_panel.app, attnflows_panel.app.app, attnflows_panel.app.session
sys.path.insert(0, sys.argv[1])
from test_views import _result
from attnflows_panel.views.attention_flows import AttentionFlowsView
from bokeh.document import Document
from pyviz_comms import Comm
view = AttentionFlowsView(_result(), tau=0.3)
panel.Column(view).get_root(Document(), comm=Comm())
after = snapshot()
changed = sorted(k for k in before if k in after and before[k] != after[k])
print(json.dumps({"checked": len(before), "changed": changed}))
"""


def test_importing_the_package_and_the_app_patches_nothing(tmp_path):
    tests = str(__import__("pathlib").Path(__file__).parent)
    out = subprocess.run([sys.executable, "-c", _SCRIPT, tests], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    # the snapshot covers the property machinery that views/bokeh_speedups.py used to replace
    assert res["checked"] > 5000
    assert res["changed"] == []


def test_the_snapshot_would_see_a_patch():
    """The check is not blind: a replaced HasProps method shows up (done here in a child process only)."""
    script = _SCRIPT.replace("before = snapshot()", "before = snapshot()\n"
                             "import bokeh.core.has_props as hp\n"
                             "_orig = hp.HasProps.equals\n"
                             "hp.HasProps.equals = lambda self, other: _orig(self, other)")
    tests = str(__import__("pathlib").Path(__file__).parent)
    out = subprocess.run([sys.executable, "-c", script, tests], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "bokeh.core.has_props.HasProps.equals" in res["changed"]
