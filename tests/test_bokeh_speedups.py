"""views/bokeh_speedups.py: the memoised Bokeh property machinery gives the same documents as Bokeh's own.

Every check builds the same thing twice in one process, with the speed-ups and with Bokeh's own
functions (``bokeh_speedups.disabled()``), and compares the serialised JSON with the model ids (a
process-wide counter) numbered by first appearance."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from contextlib import nullcontext

import pytest
from bokeh.core.json_encoder import serialize_json
from bokeh.core.property.descriptors import UnsetValueError
from bokeh.document import Document
from bokeh.themes import built_in_themes

from attnflows_panel.views import bokeh_speedups as BS

_ID = re.compile(r'(?<=[":])(p\d{4,})(?=")')  # model ids, and "__ref:<id>" in Panel's templates
_UUID = re.compile(r'"[0-9a-f]{32}"')  # uuid4().hex ids (Tabulator's rows, comms)
_NAME = re.compile(r'"([A-Z][A-Za-z]+)\d{5,}"')  # Panel's names of its objects: a class name and a counter


def _normalised(doc: Document) -> str:
    text = serialize_json(doc.to_json(deferred=False))
    seen: dict[str, str] = {}
    text = _ID.sub(lambda m: seen.setdefault(m.group(1), f"id{len(seen)}"), text)
    text = _UUID.sub('"uuid"', text)
    return _NAME.sub(lambda m: f'"{m.group(1)}#"', text)


def _both(build, theme=None) -> tuple[str, str]:
    """``build()`` → a Panel object; its document serialised with and without the speed-ups."""
    out = []
    for fast in (True, False):
        ctx = BS.disabled() if not fast else nullcontext()
        with ctx:
            assert BS.installed() is fast
            doc = Document()
            if theme is not None:
                doc.theme = theme
            doc.add_root(build().get_root(doc))
            out.append(_normalised(doc))
    return out[0], out[1]


def test_installed_on_import_of_the_views():
    assert BS.installed()


@pytest.fixture
def app(sharp_bert_dirs, demo_index, sharp_pair):
    from attnflows_panel.app import AppConfig, AttnFlowsApp
    from attnflows_panel.registry import Registry

    registry = Registry()
    registry.pair(str(sharp_bert_dirs[0]), str(sharp_bert_dirs[1]))  # loaded once, outside the builds
    config = AppConfig(pretrained=str(sharp_bert_dirs[0]), finetuned=str(sharp_bert_dirs[1]), index=str(demo_index))
    return lambda **kw: AttnFlowsApp(config, registry=registry, **kw)


@pytest.mark.parametrize("query", ["", "tau=0.2&mode=pre&level=2&sel=1:0", "mode=fine&sel=2:1,2:2"])
def test_the_whole_app_serialises_the_same(app, query):
    fast, slow = _both(lambda: app(query=query).__panel__())
    assert len(fast) > 100_000  # the whole page: views, corpus browser, head panel
    assert fast == slow


def test_a_themed_document_serialises_the_same(app):
    fast, slow = _both(lambda: app().__panel__(), theme=built_in_themes["dark_minimal"])
    assert '"#20262B"' in fast or '"#20262b"' in fast.lower()  # the theme reached the document
    assert fast == slow


def test_the_view_alone_on_a_real_pair_serialises_the_same(minilm_pair):
    from attnflows_panel.views.attention_flows import AttentionFlowsView

    result = minilm_pair.run("The cat sat on the mat.", "A cat was sitting on a mat.")
    fast, slow = _both(lambda: AttentionFlowsView(result, tau=0.1, selection=[[3, 2]], focus=True).__panel__())
    assert fast == slow


def test_an_unset_required_property_still_raises():
    from bokeh.models import GlyphRenderer

    for ctx in (nullcontext(), BS.disabled()):
        with ctx:
            with pytest.raises(UnsetValueError):
                doc = Document()
                doc.add_root(GlyphRenderer())
                doc.to_json()


def test_uninstall_restores_bokeh_and_install_is_idempotent():
    from bokeh.core.has_props import HasProps
    from bokeh.core.property.descriptors import PropertyDescriptor

    patched = (HasProps.__init__, HasProps.query_properties_with_values, PropertyDescriptor.instance_default)
    assert BS.install() is True  # already installed: nothing changes
    assert (HasProps.__init__, HasProps.query_properties_with_values, PropertyDescriptor.instance_default) == patched
    with BS.disabled():
        assert not BS.installed()
        assert HasProps.__init__.__module__ == "bokeh.core.has_props"
        assert PropertyDescriptor.instance_default.__module__ == "bokeh.core.property.descriptors"
    assert BS.installed()
    assert HasProps.__init__ is patched[0] or HasProps.__init__.__module__ == BS.__name__


def test_the_environment_variable_turns_them_off():
    code = "import attnflows_panel.views as v; from attnflows_panel.views import bokeh_speedups as b; print(b.installed())"
    env = {**os.environ, "ATTNFLOWS_BOKEH_SPEEDUPS": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    env["ATTNFLOWS_BOKEH_SPEEDUPS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr


def test_a_callback_with_a_wrong_signature_is_refused_every_time():
    import functools

    from bokeh.models import Slider

    def good(attr, old, new):
        pass

    def three(attr, old, new, extra):
        pass

    slider = Slider(start=0, end=1, value=0)
    for _ in range(2):  # the second time from the remembered signatures
        slider.on_change("value", functools.partial(three, "x"))  # binds one: (old, new, extra) -> fine
        with pytest.raises(ValueError, match=r"func\(attr, old, new\)"):
            slider.on_change("value", lambda attr: None)
        with pytest.raises(ValueError, match=r"func\(attr, old, new\)"):
            slider.on_change("value", functools.partial(three, "x", "y"))  # binds two: too few left
        slider.on_change("value", good)
        slider.remove_on_change("value", good)


def test_property_names_read_the_same():
    from bokeh.core.properties import Dict, Either, Int, List, Nullable, String

    for prop in (List(String), Dict(String, List(Int)), Nullable(Either(Int, String))):
        fast = str(prop)
        with BS.disabled():
            assert str(type(prop)(*prop.type_params)) == fast


def test_another_bokeh_version_is_left_alone(monkeypatch):
    import bokeh
    from bokeh.core.has_props import HasProps

    version = bokeh.__version__
    with BS.disabled():
        own = HasProps.__init__
        for other in ("4.0.0", "3.3.4", "dev"):
            monkeypatch.setattr(bokeh, "__version__", other)
            assert BS.install() is False
            assert not BS.installed() and HasProps.__init__ is own
        monkeypatch.setattr(bokeh, "__version__", version)
    assert BS.installed()


def test_models_are_found_in_the_same_order(app):
    """collect_models (Panel's panes, add_root and serialising walk the document with it) finds the same
    models in the same order, data sources with long columns of strings included."""
    from bokeh.model.util import collect_models

    root = app().__panel__().get_root(Document())
    fast = [m.id for m in collect_models(root)]
    with BS.disabled():
        slow = [m.id for m in collect_models(root)]
    assert len(fast) > 300 and fast == slow


def test_other_bokeh_and_holoviews_plots_serialise_the_same():
    """The speed-ups act on every Bokeh document of the process (a notebook's other plots too): a
    bokeh.plotting figure with axes, a legend, tools and a colour bar, and a HoloViews overlay."""
    import holoviews as hv
    import numpy as np
    from bokeh.layouts import column
    from bokeh.models import ColorBar, HoverTool, LinearColorMapper
    from bokeh.plotting import figure

    def bokeh_plot():
        fig = figure(width=400, height=300, title="curves", tools="pan,wheel_zoom,reset")
        x = np.linspace(0, 1, 50)
        fig.line(x, x ** 2, legend_label="square", line_color="#1b9e77")
        fig.scatter(x, np.sqrt(x), legend_label="root", size=6, marker="triangle")
        fig.add_tools(HoverTool(tooltips=[("x", "@x"), ("y", "@y")]))
        fig.add_layout(ColorBar(color_mapper=LinearColorMapper(palette="Viridis256", low=0, high=1)), "right")
        fig.legend.location = "top_left"
        return column(fig)

    def hv_plot():
        import holoviews.plotting.bokeh  # noqa: F401 - the backend, without hv.extension's notebook set-up

        overlay = hv.Curve(([0, 1, 2], [3, 1, 2]), label="c") * hv.Scatter(([0, 1, 2], [1, 2, 3]))
        return hv.render(overlay, backend="bokeh")

    for build in (bokeh_plot, hv_plot):
        out = []
        for ctx in (nullcontext(), BS.disabled()):
            with ctx:
                doc = Document()
                doc.add_root(build())
                out.append(_normalised(doc))
        assert out[0] == out[1]
