"""notebooks/04_edge_weights.ipynb (issue #27) runs headlessly from top to bottom (nbclient, python3 kernel) on
the real MiniLM pair and shows what it says: raw vs norm vs attattr edge weights of one pair, the τ profile from
the bottleneck widths, and the "in the graph for τ < x" hover values. (Kept apart from tests/test_notebooks.py,
as tests/test_notebook_heads.py is; the lead may move it there.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.real_model]

import nbclient  # noqa: E402  (test extras: a missing one is an error, never a skip)
import nbformat  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "04_edge_weights.ipynb"


@pytest.fixture
def notebook_env(monkeypatch, minilm_path, minilm_finetuned_dir):
    monkeypatch.setenv("ATTNFLOWS_PRETRAINED", str(minilm_path))
    monkeypatch.setenv("ATTNFLOWS_FINETUNED", str(minilm_finetuned_dir))
    monkeypatch.delenv("ATTNFLOWS_TAU", raising=False)
    monkeypatch.delenv("ATTNFLOWS_NOTEBOOK_STEPS", raising=False)  # the notebook's own m = 20
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


def test_edge_weights_notebook(notebook_env, tmp_path, minilm_pair):
    from attnflows_panel.bottleneck import bottleneck

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell on any error (the notebook asserts too)
    nbformat.write(nb, tmp_path / NOTEBOOK.name)
    texts, html = [], 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                texts.append(out.get("text", ""))
            data = out.get("data", {})
            texts.append(str(data.get("text/plain", "")))
            html += "text/html" in data
    text = "\n".join(texts)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "Kobayashi et al. 2020" in markdown and "Hao et al. 2021" in markdown
    assert html >= 3  # the weights table, the τ profile and the hover table render as tables
    assert "bare encoder" in text and "norm weights are given instead" in text
    line = next(x for x in text.splitlines() if x.startswith("SUMMARY "))
    s = json.loads(line[len("SUMMARY "):])
    assert s["kinds"] == {"raw/pretrained": "raw", "raw/finetuned": "raw", "norm/pretrained": "norm",
                          "norm/finetuned": "norm", "attattr/pretrained": "norm", "attattr/finetuned": "attattr"}
    assert re.fullmatch(r"in the graph for τ < 0\.\d\d", s["hover_example"]), s["hover_example"]
    assert len(re.findall(r"in the graph for τ < 0\.\d\d", text)) >= 3 * s["n"]
    # Kobayashi et al.: [CLS]/[SEP] take much attention and contribute little
    share = s["special_share"]
    for role in ("pretrained", "finetuned"):
        assert share[f"norm/{role}"] < 0.6 * share[f"raw/{role}"], share
    # the figures are the library's, recomputed here on the notebook's pair
    raw = minilm_pair.run(s["a"], s["b"])
    norm = minilm_pair.run(s["a"], s["b"], weights="norm")
    special = np.isin(raw.tokens, ["[CLS]", "[SEP]"])
    assert len(raw.tokens) == s["n"]
    L = s["layers"]
    for role in ("pretrained", "finetuned"):
        w = getattr(raw, role).attentions
        assert share[f"raw/{role}"] == pytest.approx(float(w[..., special].sum(-1).mean()), abs=1e-5)
        top_raw = bottleneck(w).member(s["tau"])[L - 1]
        top_norm = bottleneck(getattr(norm, role).attentions).member(s["tau"])[L - 1]
        assert s["level_top_kept"][role] == [int((top_raw & top_norm).sum()), int(top_raw.sum())]
