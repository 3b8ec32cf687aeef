"""Issue 26, servers and clusters: the port-in-use message names the address actually bound, a dead
``--ray-address`` fails in seconds with one line, and ``ray://`` addresses are installable with the
``[ray]`` extra. Each test fails on the code before the issue.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import tomllib

from attnflows_panel.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_port_in_use_names_the_address_that_is_bound(command, capsys, monkeypatch):
    from attnflows_panel.app.server import DEFAULT_ADDRESS

    with socket.socket() as busy:
        busy.bind((DEFAULT_ADDRESS, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main([command, "--port", str(port)]) == 1  # no --address: the default one
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = [x for x in err.splitlines() if "error" in x]
    assert len(line) == 1 and f"port {port} on {DEFAULT_ADDRESS} is already in use" in line[0], err
    assert "0.0.0.0" not in err


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_ray_address_fails_fast_in_one_line(sharp_pair, sharp_bert_dirs, tmp_path, capsys):
    pytest.importorskip("ray.data")  # the [ray] extra is part of the test dependencies
    from attnflows_panel.index.build_ray import build_index_ray

    dead = f"127.0.0.1:{_closed_port()}"
    t0 = time.perf_counter()
    with pytest.raises(ConnectionError, match=f"no Ray cluster answers at --ray-address {dead}"):
        build_index_ray(sharp_pair, "demo", None, tmp_path / "a", address=dead, limit=4, progress=False)
    assert time.perf_counter() - t0 < 30  # ray.init retried such an address for minutes
    assert main(["index", "build", "--engine", "ray", "--ray-address", dead, "--pretrained", str(sharp_bert_dirs[0]),
                 "--finetuned", str(sharp_bert_dirs[1]), "--data", "demo", "--limit", "4",
                 "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    errors = [x for x in err.splitlines() if "error" in x]
    assert "Traceback" not in err and len(errors) == 1 and "no Ray cluster answers" in errors[0], err


def test_the_ray_extra_installs_the_client_for_ray_addresses():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(req.replace(" ", "").startswith("ray[client]") for req in extras["ray"]), extras["ray"]


def test_a_closed_session_logs_one_line_not_a_traceback(capsys):
    """What Tornado and asyncio log when a browser goes away mid-message: one line, no traceback."""
    import asyncio
    import logging

    from tornado.iostream import StreamClosedError
    from tornado.websocket import WebSocketClosedError

    from attnflows_panel.cli.serve import install_closed_connection_filter

    install_closed_connection_filter()
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    loggers = [logging.getLogger(n) for n in ("tornado.application", "asyncio")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        for logger, exc in zip(loggers, (WebSocketClosedError(), StreamClosedError()), strict=True):
            try:
                raise exc
            except Exception:  # noqa: BLE001 - logged as the libraries log it
                logger.error("Uncaught exception in a callback", exc_info=True)
        # a real coroutine whose websocket write fails, reported by asyncio's handler
        loop = asyncio.new_event_loop()

        async def write_to_closed():
            raise WebSocketClosedError()

        task = loop.create_task(write_to_closed())
        loop.run_until_complete(asyncio.wait([task]))
        loop.call_exception_handler({"message": "Task exception was never retrieved", "exception": task.exception(),
                                     "future": task})
        loop.close()
        try:
            raise ValueError("a real bug")
        except ValueError:
            logging.getLogger("tornado.application").error("Uncaught exception", exc_info=True)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    closed = [x for x in lines if "the browser closed the connection" in x]
    assert len(closed) == 3, err
    assert err.count("Traceback") == 1 and "ValueError: a real bug" in err  # real errors keep their traceback
