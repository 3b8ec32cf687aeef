"""notebooks/03_heads.ipynb runs headlessly from top to bottom (nbclient, python3 kernel) on the real
MiniLM pair and shows what it says it shows. (Kept apart from tests/test_notebooks.py, which lists its
notebooks one test each; the lead may move this test there.)"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.real_model]

import nbclient  # noqa: E402  (test extras: a missing one is an error, never a skip)
import nbformat  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_heads.ipynb"
PANEL_MIME = "application/vnd.holoviews_exec.v0+json"


@pytest.fixture
def notebook_env(monkeypatch, minilm_path, minilm_finetuned_dir):
    monkeypatch.setenv("ATTNFLOWS_PRETRAINED", str(minilm_path))
    monkeypatch.setenv("ATTNFLOWS_FINETUNED", str(minilm_finetuned_dir))
    monkeypatch.setenv("ATTNFLOWS_NOTEBOOK_LIMIT", "24")
    monkeypatch.delenv("ATTNFLOWS_TAU", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")


def test_heads_notebook(notebook_env, tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell on any error
    nbformat.write(nb, tmp_path / NOTEBOOK.name)
    texts, mimes = [], set()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                texts.append(out.get("text", ""))
            data = out.get("data", {})
            mimes.update(data)
            texts.append(str(data.get("text/plain", "")))
    joined = "\n".join(texts)
    assert "24 samples, 6 layers x 12 heads" in joined
    assert "cosine per layer:" in joined and "jsd per layer:" in joined and "usage_change per layer:" in joined
    assert "disabled (mask)" in joined and "disabled (uniform)" in joined
    assert "base accuracy" in joined and "most important head per layer" in joined
    assert PANEL_MIME in mimes  # the head panel renders as a Panel output
    # the index's 8-bit values agree with the direct computation within the code's bound
    line = next(t for t in joined.splitlines() if "largest difference to the direct computation" in t)
    cos_err = float(line.split("cosine ")[1].split(",")[0])
    jsd_err = float(line.split("JSD ")[1])
    assert cos_err < 4e-3 and jsd_err < 4e-3
