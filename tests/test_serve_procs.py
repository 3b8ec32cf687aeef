"""``attnflows serve --num-procs N`` (attnflows_panel/app/server.py): worker processes forked once the
models are loaded, each with its own socket on the one port (README.md, "Serving the app")."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from attnflows_panel.app.server import MAX_AUTO_PROCS, _num_procs, auto_num_procs
from browser_support import REPO, free_port, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="worker processes are forked on Linux only")


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_worker_processes_share_one_model_load_and_serve_every_session(sharp_bert_dirs, demo_index, tmp_path):
    """Two workers: the pair is loaded once (before the fork), both workers build sessions, every
    session gets its first view with the server's own stylesheets (no CDN), no error is logged, and
    stopping the command stops the workers and frees the port."""
    import panel  # noqa: F401  (Panel's Bokeh models, to read the documents)
    from bokeh.client import pull_session

    port = free_port()
    log_path = tmp_path / "server.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "attnflows_panel", "--debug", "serve", "--pretrained", str(sharp_bert_dirs[0]),
           "--finetuned", str(sharp_bert_dirs[1]), "--index", str(demo_index), "--port", str(port),
           "--address", "127.0.0.1", "--num-procs", "2"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        wait_for(lambda: proc.poll() is not None or len(re.findall(r"worker \d of 2", log_path.read_text())) == 2,
                 timeout=180, what=f"two workers ({log_path})")
        assert proc.poll() is None, log_path.read_text()
        wait_for(lambda: _listening(port), timeout=30, what="the port")
        url = f"http://127.0.0.1:{port}/"
        for _ in range(16):  # new connections, spread over the workers by the kernel
            session = pull_session(url=url)
            models = list(session.document.models)
            session.close()
            card = [m for m in models if "af-sample" in (getattr(m, "css_classes", None) or [])]
            assert card and "demo-" in card[0].text
            # the radial component's drawing is in the first document (its packed data)
            assert any("pick" in getattr(getattr(m, "data", None), "properties", set)() and m.data.data
                       for m in models)
            sheets = [m.url for m in models if type(m).__name__ == "ImportedStyleSheet"]
            assert sheets and not [u for u in sheets if u.startswith("http")], sheets
        text = log_path.read_text()
        assert "served at " + url in text and "(by 2 processes)" in text
        loads = re.findall(r"model pair loaded in process (\d+)", text)
        assert loads == [str(proc.pid)], text  # once, in the first process, before the workers exist
        builders = set(re.findall(r"building a session in process (\d+)", text))
        assert len(builders) == 2 and str(proc.pid) not in builders, text
        assert "Traceback" not in text and "ERROR" not in text, text
    finally:
        proc.terminate()
        proc.wait(30)
    # the workers end with the command that forked them, and the port is free again
    wait_for(lambda: not _listening(port), timeout=15, what="the workers to stop")
    for pid in builders:
        wait_for(lambda pid=pid: (not Path(f"/proc/{pid}").exists()
                                  or "zombie" in Path(f"/proc/{pid}/status").read_text()),
                 timeout=15, what=f"worker {pid} to end")


def test_num_procs_rules():
    """'auto' is one per CPU (at most MAX_AUTO_PROCS) with the models on the CPU, one on a GPU; a
    number must be positive, and above one needs the CPU."""
    cpus = len(os.sched_getaffinity(0))
    assert auto_num_procs() == auto_num_procs("cpu") == max(1, min(cpus, MAX_AUTO_PROCS))
    assert auto_num_procs("cuda:0") == 1
    assert _num_procs("auto", "cuda") == 1
    assert _num_procs(3, "cpu") == 3 and _num_procs(1, "cuda:0") == 1
    with pytest.raises(ValueError, match="CUDA cannot be used after a fork"):
        _num_procs(2, "cuda:0")
    for bad in (0, -1, "two"):
        with pytest.raises(ValueError, match="positive number or 'auto'"):
            _num_procs(bad, "cpu")


@pytest.mark.parametrize("value", ["0", "many"])
def test_a_bad_num_procs_is_named_before_anything_loads(value):
    proc = subprocess.run([sys.executable, "-m", "attnflows_panel", "serve", "--num-procs", value],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--num-procs" in proc.stderr and "positive number or 'auto'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_port_taken_after_the_check_is_the_same_clear_error():
    """``attnflows serve`` checks its port before the models load, and binds it again (``SO_REUSEPORT``,
    for its workers) once they have: a port another program took in between gets the check's message,
    not a bare ``OSError``; a free port is held, and a worker's listening socket binds it beside the holder."""
    from attnflows_panel._io import PortError
    from attnflows_panel.app.server import _reserve_port

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        with pytest.raises(PortError, match=rf"port {taken} on 127.0.0.1 is already in use; stop the other server"):
            _reserve_port(taken, "127.0.0.1")
    held = _reserve_port(0, "127.0.0.1")
    try:
        port = held.getsockname()[1]
        with socket.socket() as worker:
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", port))  # a worker's listening socket beside the holder
            worker.listen()
            assert _listening(port)
    finally:
        held.close()
