"""attnflows_panel: Attention Flows (DeRose, Wang, Berger) as a Panel app, plus a FAISS corpus browser.

Layers, bottom up (each imports only the ones below it):

- ``graph``, ``compare``, ``signatures``, ``layout``: pure numpy, the paper in code.
- ``models``: ModelPair (torch/transformers); ``corpus``: sentence pairs as a ``datasets.Dataset``.
- ``finetune``, ``index``: fine-tuning and the FAISS signature index.
- ``views``, ``app``, ``cli``: what a user sees.

Layer convention everywhere: HF order, 0-based. ``attn[k, h, a, b]`` is the weight that query ``a``
puts on key ``b`` in layer ``k``'s head ``h``. The Attention Graph has L+1 levels; level L is [CLS].
"""

__version__ = "0.1.0"

PRETRAINED_COLOR = "#2bb3a4"  # turquoise
FINETUNED_COLOR = "#7b3fa0"  # purple
SHARED_COLOR = "#e07b00"  # dark orange

#: The paper's attention threshold τ for BERT-base (§4.1).
PAPER_TAU = 0.3
#: Default attention threshold τ, for the offline default pair and wherever no τ is given (the views,
#: ``prepare.prepare_index``). all-MiniLM-L6-v2's attention is diffuse: its last-layer [CLS] rarely puts
#: more than ~0.24 on any token, so the paper's BERT-base-friendly τ = 0.3 leaves an empty graph; at 0.15
#: the rings grow by roughly 5-10 tokens per level, as the paper describes (§4.3.1). The app opens at the
#: τ of its index when it has one (``attnflows_panel.defaults.initial_tau`` holds the one rule). Users can
#: change it anywhere.
DEFAULT_TAU = 0.15
