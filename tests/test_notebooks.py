"""The notebooks in notebooks/ run headlessly from top to bottom (nbclient, python3 kernel) on the real
MiniLM pair, and show what they say they show."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.real_model]

import nbclient  # noqa: E402  (test extras: a missing one is an error, never a skip)
import nbformat  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PANEL_MIME = "application/vnd.holoviews_exec.v0+json"


@pytest.fixture
def notebook_env(monkeypatch, minilm_path, minilm_finetuned_dir):
    """What the kernel sees: the test's models (and its temp cache dir, set by conftest), a small corpus."""
    monkeypatch.setenv("ATTNFLOWS_PRETRAINED", str(minilm_path))
    monkeypatch.setenv("ATTNFLOWS_FINETUNED", str(minilm_finetuned_dir))
    monkeypatch.setenv("ATTNFLOWS_NOTEBOOK_LIMIT", "24")
    monkeypatch.delenv("ATTNFLOWS_TAU", raising=False)  # the notebooks' own default, DEFAULT_TAU
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


def execute(name: str, tmp_path: Path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the cell on any error
    nbformat.write(nb, tmp_path / name)  # the executed notebook, for a look when something is off
    return nb


def outputs(cell) -> tuple[str, set[str]]:
    """(all text a cell printed or returned, the mime types of its rich outputs)."""
    text, mimes = [], set()
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            text.append(out.get("text", ""))
        data = out.get("data", {})
        mimes.update(data)
        text.append(str(data.get("text/plain", "")))
        if out.get("output_type") == "error":
            text.append("\n".join(out.get("traceback", [])))
    return "\n".join(text), mimes


def resource_loads(nb) -> list[str]:
    """The JavaScript that the notebook's outputs run to load BokehJS and Panel (pn.extension's)."""
    return [str(out.get("data", {}).get("application/javascript", "")) for c in code_cells(nb)
            for out in c.get("outputs", []) if "application/javascript" in out.get("data", {})]


def assert_offline(nb) -> None:
    """pn.extension(inline=True): the loader fetches no BokehJS/Panel URL (a CDN one renders nothing
    offline); the libraries are in the notebook itself."""
    import json
    import re

    loads = [js for js in resource_loads(nb) if "const js_urls = " in js]
    assert loads, "no BokehJS/Panel loader in the outputs"
    for js in loads:
        for kind in ("js_urls", "css_urls"):
            m = re.search(rf"const {kind} = (\[.*?\]);", js)
            urls = json.loads(m.group(1)) if m else []
            remote = [u for u in urls if u.startswith(("http://", "https://", "//"))]
            assert not remote, f"the notebook fetches {remote}: the view stays empty offline"
    assert max(len(js) for js in loads) > 1_000_000, "BokehJS is not inlined"


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_one_sample_notebook(notebook_env, tmp_path, minilm_pair):
    nb = execute("01_one_sample.ipynb", tmp_path)
    cells = code_cells(nb)
    texts = [outputs(c) for c in cells]
    run_text = next(t for t, _ in texts if "fine-tuned prediction:" in t)
    result = minilm_pair.run(
        "The new vaccine was 91 percent effective at preventing severe illness.",
        "The vaccine prevented serious disease in 91 percent of cases.",
    )
    assert f"{result.n} tokens: {' '.join(result.tokens)}" in run_text
    assert f"fine-tuned prediction: {result.finetuned.label}" in run_text
    assert "(6, 12, " in run_text and "float32" in run_text
    assert any("ring sizes" in t for t, _ in texts)
    # the view renders as a Panel output, and the export as an SVG image
    assert any(PANEL_MIME in m for _, m in texts)
    assert any("image/svg+xml" in m for _, m in texts)
    assert any("selected “[CLS]”" in t for t, _ in texts)  # driven from Python: the frozen [CLS] trace
    assert_offline(nb)


def test_search_corpus_notebook(notebook_env, tmp_path):
    nb = execute("02_search_corpus.ipynb", tmp_path)
    texts = [outputs(c) for c in code_cells(nb)]
    joined = "\n".join(t for t, _ in texts)
    assert "SignatureIndex(" in joined and "count=24" in joined
    # the query tables: ranks 1..5 and scores
    query_outputs = [t for t, m in texts if "rank" in t and "score" in t]
    assert len(query_outputs) >= 2
    for t in query_outputs:
        assert "demo-" in t
    # the browser and the whole app render in the notebook
    assert sum(PANEL_MIME in m for _, m in texts) >= 2
    assert_offline(nb)
