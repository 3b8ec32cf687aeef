"""Shared pieces of the browser tests: a served app in a subprocess whose errors are collected, one
headless Chromium, and a watcher of a page's console errors, page errors and failed requests.

- :class:`ServedApp` starts ``python -m attnflows_panel serve`` (the README's command) on 127.0.0.1 and a
  free port, in a subprocess. A small launcher in front of the CLI adds one logging handler on the root
  logger (so on 'bokeh', 'tornado', 'panel', 'asyncio' and 'attnflows_panel' alike) that writes every
  record of level ERROR or above, with its traceback, to ``errors.log``, plus a ``threading.excepthook``
  and ``sys.excepthook`` that do the same. :meth:`ServedApp.new_errors` returns what was written since
  the last call: a test step asserts it is empty, so a server-side exception fails the step that caused
  it, even when the browser shows nothing.
- :func:`served_panel` serves a Panel factory in a thread of the test process on a free port.
- :func:`launch_chromium` starts the Debian chromium headless with the project's flags; :func:`chromium_browser`
  holds one for a block (conftest.py's ``browser`` fixture: one per test module).
- :class:`PageProblems` collects a page's console errors, uncaught page errors, failed requests and
  requests that leave the server (the app must work offline); :meth:`PageProblems.take` returns and
  clears them.
- JavaScript helpers that find where a glyph of a Bokeh figure lies on the screen, given the model
  ``name`` of its renderer (they read the renderer's view, its screen coordinates ``sx``/``sy``: the
  only way a test can find a point on a Bokeh canvas; the app itself never uses these). The radial view
  is one component (views/radial.js) whose tokens and head glyphs keep the names
  ``attnflows-node-targets`` / ``attnflows-glyph-targets``: for those names the helpers read the
  component's own test hook (``attnflowsPoints`` on its root element, documented in views/radial.py).
- :func:`radial_page` mounts the component alone in a page (no server): the property test and the
  hover benchmark use it.

Tests wait on conditions, never on fixed sleeps: :func:`wait_for` polls a condition until a deadline.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
#: generous for a loaded 2-core CI machine: every wait still ends as soon as its condition holds
TIMEOUT_S = 90.0

# The launcher that runs in the server subprocess: an ERROR handler in front of the project's CLI.
_LAUNCHER = r"""
import logging, sys, threading, traceback
errors = open(sys.argv[1], "a", buffering=1, encoding="utf-8")

class ToFile(logging.Handler):
    def emit(self, record):
        try:
            errors.write(f"{record.levelname} {record.name}: {self.format(record)}\n")
        except Exception:
            pass

handler = ToFile(level=logging.ERROR)
handler.setFormatter(logging.Formatter("%(message)s"))
logging.getLogger().addHandler(handler)
for name in ("bokeh", "tornado", "panel", "asyncio", "attnflows_panel", "param"):
    logging.getLogger(name).propagate = True

def hook(args):
    errors.write("uncaught in thread " + str(args.thread) + ":\n"
                 + "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)))
threading.excepthook = hook

from attnflows_panel.cli import main
sys.exit(main(sys.argv[2:]))
"""


def wait_for(condition, timeout: float = TIMEOUT_S, what: str = "condition", interval: float = 0.05):
    """Poll ``condition`` until it returns a true value and return that; fail naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServedApp:
    """``attnflows serve ARGS`` in a subprocess on 127.0.0.1:<free port>, with its errors collected.

    ``url`` is the app's address; ``log`` the subprocess's stdout and stderr; ``new_errors()`` the
    ERROR records (with tracebacks) written since the last call.
    """

    def __init__(self, args: list[str], workdir: Path, env: dict | None = None, ready_timeout: float = 300.0):
        self.port = free_port()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.error_file = self.workdir / "errors.log"
        self.error_file.write_text("")
        self.log_file = self.workdir / "server.log"
        self._seen = 0
        environ = dict(os.environ if env is None else env)
        # run the code of this checkout (a worktree) even where another copy is pip-installed
        environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), environ.get("PYTHONPATH", "")) if p)
        environ.setdefault("HF_HUB_OFFLINE", "1")
        environ.setdefault("HF_DATASETS_OFFLINE", "1")
        environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self._log = open(self.log_file, "w")  # noqa: SIM115 - the server's log while it runs, closed by stop()
        cmd = [sys.executable, "-c", _LAUNCHER, str(self.error_file), "serve", *args,
               "--port", str(self.port), "--address", "127.0.0.1"]
        self.proc = subprocess.Popen(cmd, env=environ, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.workdir)
        self.url = f"http://127.0.0.1:{self.port}/"
        try:
            wait_for(self._ready, timeout=ready_timeout, what=f"the app server ({self.log_file})", interval=0.2)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the app server exited ({self.proc.returncode}):\n{self.log()}")
        try:
            with urllib.request.urlopen(self.url, timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def new_errors(self) -> str:
        """The server's ERROR records (and uncaught exceptions) since the last call."""
        text = self.error_file.read_text(errors="replace")
        new, self._seen = text[self._seen:], len(text)
        if self.proc.poll() is not None:
            new += f"\nthe app server exited ({self.proc.returncode})"
        return new

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()


@contextlib.contextmanager
def served_panel(factory, title: str = "Attention Flows"):
    """Serve a Panel ``factory`` in a thread of this process on 127.0.0.1 and a free port; yield the
    port once the server accepts connections (tests that look at the view objects they serve)."""
    import panel as pn

    port = free_port()
    thread = pn.serve(factory, port=port, address="127.0.0.1", threaded=True, show=False, title=title)

    def up():
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(up, what="the Panel server")
        yield port
    finally:
        thread.stop()


def launch_chromium(playwright):
    """The Debian chromium, headless, with the project's flags."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@contextlib.contextmanager
def chromium_browser():
    """One headless Chromium (:func:`launch_chromium`) for a block; a missing chromium fails the test (it is
    part of the test setup: .ci/run installs it), never skips it."""
    import pytest
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as p:
        b = launch_chromium(p)
        try:
            yield b
        finally:
            b.close()


class PageProblems:
    """Console errors, uncaught page errors, failed requests and requests that leave ``origins``."""

    def __init__(self, page, *origins: str):
        self.errors: list[str] = []
        self.external: list[str] = []
        allowed = tuple(o.rstrip("/") for o in origins) + ("data:", "blob:", "about:")
        page.on("console",
                lambda m: m.type == "error" and self.errors.append(f"console error: {m.text} ({m.location})"))
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: self._failed(r))
        page.on("request", lambda r: None if r.url.startswith(allowed) else self.external.append(r.url))

    def _failed(self, request) -> None:
        # a download that the page hands to the browser shows up as an aborted navigation, not a failure
        if request.failure and "ERR_ABORTED" in request.failure and request.resource_type in ("document", "other"):
            return
        self.errors.append(f"request failed: {request.url} ({request.failure})")

    def take(self) -> list[str]:
        out = self.errors + [f"request outside the server (the app must work offline): {u}" for u in self.external]
        self.errors, self.external = [], []
        return out


# JavaScript: the screen points of every glyph of the renderer named `name` (a model name), with the
# columns `cols` of its data source. Returns null until the renderer's view has drawn.
GLYPH_POINTS = """([name, cols]) => {
  // the radial view is one component (views/radial.js): its tokens and head glyphs keep the names of the
  // Bokeh renderers they replace, read from the component's own test hook (attnflowsPoints); head glyphs
  // are targets of their own from 3 px, so the view is zoomed in on the first glyph until they are
  if (name === "attnflows-node-targets" || name === "attnflows-glyph-targets") {
    const find = (node) => {
      const hit = node.querySelector(".attnflows-radial");
      if (hit) return hit;
      for (const e of node.querySelectorAll("*")) if (e.shadowRoot) { const f = find(e.shadowRoot); if (f) return f; }
      return null;
    };
    const el = find(document);
    if (!el || el.getAttribute("data-ready") !== "1") return null;
    const glyphs = name === "attnflows-glyph-targets";
    let pts = el.attnflowsPoints(glyphs ? "glyphs" : "nodes");
    if (glyphs && pts.length && pts[0].size < 4) {
      const z = parseFloat(el.getAttribute("data-zoom")) * 4.5 / Math.max(pts[0].size, 0.05);
      const c = el.attnflowsPoints("nodes").find((p) => p.id === pts[0].node);
      const [x, y] = el.attnflowsData(c.id);
      el.attnflowsView(z, x, y);
      pts = el.attnflowsPoints("glyphs");
    }
    return pts.map((p) => {
      const row = {i: glyphs ? p.row : p.id, x: p.x, y: p.y};
      for (const c of cols) if (p[c] !== undefined) row[c] = p[c];
      return row;
    });
  }
  if (window.Bokeh === undefined) return null;
  const seen = new Set();
  function* walk(v) {
    if (!v || seen.has(v)) return;
    seen.add(v); yield v;
    if (typeof v.children === "function") for (const c of v.children()) yield* walk(c);
  }
  for (const root of Bokeh.index.roots) {
    for (const v of walk(root)) {
      if (v.model.name !== name || v.glyph === undefined) continue;
      const g = v.glyph, sx = g.sx, sy = g.sy;
      if (!sx || sx.length === 0) return null;
      const r = v.plot_view.canvas_view.el.getBoundingClientRect();
      const data = v.model.data_source.data;
      const out = [];
      for (let i = 0; i < sx.length; i++) {
        const row = {i, x: r.left + sx[i], y: r.top + sy[i]};
        for (const c of cols) if (data[c] !== undefined) row[c] = data[c][i];
        out.push(row);
      }
      return out;
    }
  }
  return null;
}"""


def settled_points(page, name: str, cols: list[str], what: str, timeout: float = TIMEOUT_S) -> list[dict]:
    """:data:`GLYPH_POINTS` once two reads 0.25 s apart agree: the figure has stopped moving (a page
    still laying its outputs out, on a loaded machine, moves a token between the read and the click)."""
    last: list = [None]

    def same():
        pts = page.evaluate(GLYPH_POINTS, [name, cols])
        done = bool(pts) and pts == last[0]
        last[0] = pts
        return pts if done else None

    return wait_for(same, timeout=timeout, what=what, interval=0.25)


# JavaScript: scroll the figure that holds the renderer named `name` to the middle of the window.
SCROLL_INTO_VIEW = """(name) => {
  if (name === "attnflows-node-targets" || name === "attnflows-glyph-targets") {
    const find = (node) => {
      const hit = node.querySelector(".attnflows-radial");
      if (hit) return hit;
      for (const e of node.querySelectorAll("*")) if (e.shadowRoot) { const f = find(e.shadowRoot); if (f) return f; }
      return null;
    };
    const el = find(document);
    if (el) el.scrollIntoView({block: "center", inline: "center"});
    return !!el;
  }
  const seen = new Set();
  function* walk(v) {
    if (!v || seen.has(v)) return;
    seen.add(v); yield v;
    if (typeof v.children === "function") for (const c of v.children()) yield* walk(c);
  }
  for (const root of Bokeh.index.roots)
    for (const v of walk(root))
      if (v.model.name === name && v.plot_view !== undefined) {
        v.plot_view.canvas_view.el.scrollIntoView({block: "center", inline: "center"});
        return true;
      }
  return false;
}"""


# --------------------------------------------------------------------------------------------------
# the radial component (views/radial.js) in a page of its own, without a server
# --------------------------------------------------------------------------------------------------

RADIAL_JS = REPO / "attnflows_panel" / "views" / "radial.js"

# JavaScript: import radial.js from its text (a blob URL: no server, no network) as window.radial
IMPORT_RADIAL = """async (src) => {
  const url = URL.createObjectURL(new Blob([src], {type: "text/javascript"}));
  window.radial = await import(url);
  return Object.keys(window.radial);
}"""

# JavaScript: render the component into a w×h box with `data` (arrays as {__nd__: base64, dtype}) through
# a stand-in for Panel's model (its properties and `on`), as Panel's JSComponent calls render
MOUNT_RADIAL = """([data, w, h]) => {
  const types = {uint8: Uint8Array, int8: Int8Array, uint16: Uint16Array, int16: Int16Array,
                 uint32: Uint32Array, int32: Int32Array, float32: Float32Array, float64: Float64Array};
  function decode(v) {
    if (v && typeof v === "object" && v.__nd__ !== undefined) {
      const bin = atob(v.__nd__), buf = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) buf[i] = bin.charCodeAt(i);
      return new types[v.dtype](buf.buffer);
    }
    return v;
  }
  const props = {data: {}, frozen: {}, level: null, focus: false, legend: [], title: "", sentences: [], pick: {},
                 export: ""};
  for (const k in data) props.data[k] = decode(data[k]);
  const handlers = {};
  const model = new Proxy(props, {
    get(t, k) {
      if (k === "on") return (name, cb) => { (handlers[name] = handlers[name] || []).push(cb); };
      return t[k];
    },
    set(t, k, v) { t[k] = v; for (const cb of handlers[k] || []) cb(); return true; },
  });
  document.body.style.margin = "0";
  const el = document.createElement("div");
  el.style.cssText = `width:${w}px;height:${h}px;position:relative`;
  document.body.appendChild(el);
  window.radial.render({model, el});
  window.radialModel = model;
  window.radialDecode = (d) => {  // new data for the mounted component, decoded as above (benchmarks)
    const out = {};
    for (const k in d) out[k] = decode(d[k]);
    return out;
  };
  return true;
}"""


def encode_radial_data(data: dict) -> dict:
    """``pack_flow`` output as JSON for :data:`MOUNT_RADIAL` (numpy arrays as base64 + dtype)."""
    import base64

    import numpy as np

    out = {}
    for k, v in data.items():
        if isinstance(v, np.ndarray):
            a = np.ascontiguousarray(v)
            raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
            out[k] = {"__nd__": base64.b64encode(raw).decode(), "dtype": str(a.dtype)}
        elif isinstance(v, (np.integer, np.floating, np.bool_)):
            out[k] = v.item()
        else:
            out[k] = v
    return out


def radial_page(page, data: dict, width: int = 800, height: int = 800):
    """Mount the radial component with ``data`` (``pack_flow`` output) in ``page``; return its root locator
    once it has drawn."""
    from attnflows_panel.views.radial import esm_source

    page.set_content("<!doctype html><html><body></body></html>")
    page.evaluate(IMPORT_RADIAL, esm_source())  # radial.js and its parts, joined as the component gets them
    page.evaluate(MOUNT_RADIAL, [encode_radial_data(data), width, height])
    root = page.locator(".attnflows-radial")
    wait_for(lambda: root.get_attribute("data-ready") == "1", what="the radial component's first drawing")
    return root
