"""Process-wide cache of loaded model pairs and signature indexes, shared by every app session.

A Panel server runs one Python process for many browser sessions. Loading a model pair (two BERTs)
takes seconds and hundreds of MB, a FAISS index as much again, so both are loaded once per process and
handed to every session; everything a user can change (sample, τ, mode, level, selection, typed
sentences) lives in the session's own :class:`~attnflows_panel.app.session.AttnFlowsApp`.

:class:`Registry` is that small shared object:

- ``registry.pair(pretrained, finetuned)`` loads a :class:`~attnflows_panel.models.ModelPair` once per
  *request key* (the resolved folders or hub names). After loading, the pair's fingerprint (weights
  SHA-256 of both models) is the identity: a request under another spelling of the same weights (a hub
  name and its snapshot folder) loads once more to learn that, then gets the pair already in memory
  and the duplicate is dropped, so sessions never hold two copies of one set of weights.
- ``registry.index(path, pair)`` opens a :class:`~attnflows_panel.index.SignatureIndex` once per
  (resolved folder, pair fingerprint).
- ``registry.run(pair, a, b)`` runs a sentence pair under a per-pair lock (two sessions' forward
  passes on the same 2-core CPU would only slow each other down) and keeps the last results in a
  byte-bounded LRU cache: many sessions open the same corpus samples (the first one above all), and a
  :class:`~attnflows_panel.models.PairResult` is immutable data, so they share it.

- ``registry.shared(owner, key, make)`` computes a value once per (owner object, key) and hands the
  same value to every session: the views' analysis of a result (both Attention Graphs at τ, their
  comparison, the radial layout and the columns sent to the browser), so that twenty sessions opening
  the app at once on the same first sample build it once. The owner (a result) is kept alive with its
  entry, the values are treated as read-only, and the number of entries is bounded (LRU).

Concurrent first requests for the same key block on one load (per-key lock, double-checked), so twenty
sessions opening a cold server load the model once. ``registry.loads`` counts actual loads per kind,
which the load test asserts on.

:func:`shared_registry` returns the one registry of this process (created on first use). It is the only
process-wide object of the app, and it holds only immutable-after-load resources; a server or a test
that wants isolation creates its own ``Registry()`` and passes it to the app.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["Registry", "shared_registry", "fingerprint_key"]

log = logging.getLogger(__name__)


def fingerprint_key(fingerprint: Any) -> str:
    """A stable string key for a ``ModelPair.fingerprint`` dict (or anything JSON-able)."""
    return json.dumps(fingerprint, sort_keys=True, default=str)


def _spec_key(value: str | Path | None) -> str | None:
    """Normalise a model/index spec: local paths resolve to absolute folders, hub names stay as given."""
    if value is None:
        return None
    text = str(value)
    path = Path(text).expanduser()
    if path.exists():
        return str(path.resolve())
    return text


def _result_key(pair, sentence_a: str, sentence_b: str, weights: str) -> tuple:
    """The result cache's key: the pair object, both sentences and the kind of edge weights."""
    return (id(pair), sentence_a, sentence_b, weights)


class Registry:
    """Thread-safe, load-once cache of model pairs and indexes (see the module docstring).

    Parameters
    ----------
    pair_loader, index_opener:
        What actually loads; default ``ModelPair.load`` and ``SignatureIndex.open``. Tests and
        benchmarks pass their own (e.g. to count or to build a random-init BERT-base pair).
    result_cache_bytes:
        Budget of the shared result cache (attention arrays of both models); 0 disables it. A
        MiniLM pair of 40 tokens takes 0.5 MB, a BERT-base pair of 128 tokens 19 MB.
    """

    def __init__(
        self,
        pair_loader: Callable[..., Any] | None = None,
        index_opener: Callable[..., Any] | None = None,
        *,
        result_cache_bytes: int = 256 * 2**20,
        shared_entries: int = 64,
    ) -> None:
        self._pair_loader = pair_loader
        self._index_opener = index_opener
        self._lock = threading.Lock()  # guards the dicts below, never held during a load
        self._key_locks: dict[tuple, threading.Lock] = {}
        self._pairs: dict[tuple, Any] = {}  # request key -> pair
        self._by_fingerprint: dict[str, Any] = {}  # fingerprint key -> pair
        self._indexes: dict[tuple, Any] = {}
        self._run_locks: dict[int, threading.Lock] = {}
        self._results: OrderedDict[tuple, Any] = OrderedDict()
        self._result_bytes = 0
        self.result_cache_bytes = int(result_cache_bytes)
        self._shared: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()
        self.shared_entries = int(shared_entries)
        self.loads: collections.Counter[str] = collections.Counter()

    # -- helpers ---------------------------------------------------------------------------------
    def _key_lock(self, key: tuple) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def _load_once(self, store: dict, key: tuple, load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in store:
                return store[key]
        with self._key_lock(key):
            with self._lock:  # double-checked: another thread may have loaded it while we waited
                if key in store:
                    return store[key]
            value = load()
            with self._lock:
                store[key] = value
            return value

    # -- model pairs -----------------------------------------------------------------------------
    def pair(self, pretrained: str | Path | None = None, finetuned: str | Path | None = None, *,
             device: str | None = None):
        """The :class:`ModelPair` for ``(pretrained, finetuned)``, loaded at most once per process.

        ``None`` for both means the offline default (packaged MiniLM + its cached fine-tuned
        counterpart), exactly as ``ModelPair.load()``.
        """
        key = ("pair", _spec_key(pretrained), _spec_key(finetuned), device)

        def load():
            loader = self._pair_loader
            if loader is None:
                from attnflows_panel.models import ModelPair

                loader = ModelPair.load
            pair = loader(
                None if pretrained is None else str(pretrained),
                None if finetuned is None else str(finetuned),
                device=device,
            )
            fp = getattr(pair, "fingerprint", None)  # hashes the weight files: outside the lock
            # a server's log shows every load (README.md, "Serving the app": one per server)
            log.info("model pair loaded in process %d: %s + %s", os.getpid(), pretrained, finetuned)
            with self._lock:
                self.loads["pair"] += 1
                if fp is not None:
                    # same weights under another spelling: keep the first loaded object
                    pair = self._by_fingerprint.setdefault(fingerprint_key(fp), pair)
            return pair

        return self._load_once(self._pairs, key, load)

    def causal_pair(self, pretrained: str | Path, finetuned: str | Path):
        """The :class:`~attnflows_panel.causal.CausalPair` (a decoder base and its fine-tune), loaded at most
        once per process."""
        key = ("causal", _spec_key(pretrained), _spec_key(finetuned))

        def load():
            from attnflows_panel.causal import CausalPair

            pair = CausalPair.load(str(pretrained), str(finetuned))
            log.info("decoder pair loaded in process %d: %s + %s", os.getpid(), pretrained, finetuned)
            with self._lock:
                self.loads["causal"] += 1
            return pair

        return self._load_once(self._pairs, key, load)

    def cached_pair(self, pretrained: str | Path | None = None, finetuned: str | Path | None = None, *,
                    device: str | None = None):
        """The pair if it is loaded already, else None (never loads)."""
        key = ("pair", _spec_key(pretrained), _spec_key(finetuned), device)
        with self._lock:
            return self._pairs.get(key)

    def cached_index(self, path: str | Path, pair=None):
        """The index if it is open already, else None (never opens)."""
        fp = getattr(pair, "fingerprint", None) if pair is not None else None
        key = ("index", _spec_key(path), None if fp is None else fingerprint_key(fp))
        with self._lock:
            return self._indexes.get(key)

    def add_pair(self, pair, pretrained: str | Path | None = None, finetuned: str | Path | None = None, *,
                 device: str | None = None):
        """Register an already loaded pair under a request key (used by tests and embedding code)."""
        key = ("pair", _spec_key(pretrained), _spec_key(finetuned), device)
        fp = getattr(pair, "fingerprint", None)
        with self._lock:
            self._pairs.setdefault(key, pair)
            if fp is not None:
                self._by_fingerprint.setdefault(fingerprint_key(fp), pair)
            return self._pairs[key]

    def run_lock(self, pair) -> threading.Lock:
        """The lock that serialises inference on ``pair`` (its tokenizer is shared by all sessions)."""
        with self._lock:
            return self._run_locks.setdefault(id(pair), threading.Lock())

    def run(self, pair, sentence_a: str, sentence_b: str, weights: str = "raw"):
        """``pair.run(sentence_a, sentence_b, weights=weights)``, from the shared cache or under the pair's lock.

        Safe from any thread. Errors (empty sentence, ...) propagate and are not cached.
        """
        key = _result_key(pair, sentence_a, sentence_b, weights)
        hit = self._lookup(pair, key)
        if hit is not None:
            return hit
        with self.run_lock(pair):
            hit = self._lookup(pair, key)  # another session may have run the same pair while we waited
            if hit is not None:
                return hit
            result = pair.run(sentence_a, sentence_b, weights=weights)
            self._remember(pair, key, result)
        return result

    def _lookup(self, pair, key: tuple):
        with self._lock:
            entry = self._results.get(key)
            if entry is None or entry[0] is not pair:  # an id reused by another object is no hit
                return None
            self._results.move_to_end(key)
            self.loads["result_hit"] += 1
            return entry[1]

    def cached_result(self, pair, sentence_a: str, sentence_b: str, weights: str = "raw"):
        """The cached result of this pair of sentences, or None (never runs the models)."""
        with self._lock:
            entry = self._results.get(_result_key(pair, sentence_a, sentence_b, weights))
            return entry[1] if entry is not None and entry[0] is pair else None

    @staticmethod
    def _nbytes(result) -> int:
        total = 0
        for out in (getattr(result, "pretrained", None), getattr(result, "finetuned", None)):
            total += int(getattr(getattr(out, "attentions", None), "nbytes", 0) or 0)
        return total

    def _remember(self, pair, key: tuple, result) -> None:
        size = self._nbytes(result)
        with self._lock:
            self.loads["run"] += 1
            old = self._results.pop(key, None)
            if old is not None:
                self._result_bytes -= self._nbytes(old[1])
            if size > self.result_cache_bytes:
                return
            self._results[key] = (pair, result)  # the pair is kept alive, so its id stays unique
            self._result_bytes += size
            while self._result_bytes > self.result_cache_bytes and self._results:
                _, (_, evicted) = self._results.popitem(last=False)
                self._result_bytes -= self._nbytes(evicted)

    # -- values derived from a result, shared by sessions -------------------------------------------
    def shared(self, owner: Any, key: Any, make: Callable[[], Any]) -> Any:
        """``make()``, once per (``owner``, ``key``) while the entry stays in the LRU; the same value for
        every caller after that (treat it as read-only). ``owner`` is compared by identity and kept
        alive with its entry, so that an id reused by another object is never a hit."""
        k = (id(owner), key)
        with self._lock:
            entry = self._shared.get(k)
            if entry is not None and entry[0] is owner:
                self._shared.move_to_end(k)
                self.loads["shared_hit"] += 1
                return entry[1]
        value = make()  # outside the lock: two sessions may both build it once; the first one is kept
        with self._lock:
            entry = self._shared.get(k)
            if entry is not None and entry[0] is owner:
                return entry[1]
            self._shared[k] = (owner, value)
            self.loads["shared"] += 1
            while len(self._shared) > self.shared_entries:
                self._shared.popitem(last=False)
        return value

    # -- indexes ---------------------------------------------------------------------------------
    def index(self, path: str | Path, pair=None):
        """The :class:`SignatureIndex` at ``path`` (checked against ``pair``), opened once per process."""
        fp = getattr(pair, "fingerprint", None) if pair is not None else None
        key = ("index", _spec_key(path), None if fp is None else fingerprint_key(fp))

        def load():
            opener = self._index_opener
            if opener is None:
                from attnflows_panel.index import SignatureIndex

                opener = SignatureIndex.open
            idx = opener(Path(path), pair=pair)
            with self._lock:
                self.loads["index"] += 1
            return idx

        return self._load_once(self._indexes, key, load)

    def __repr__(self) -> str:
        with self._lock:
            pairs = len(self._by_fingerprint) or len(self._pairs)
            return f"Registry(pairs={pairs}, indexes={len(self._indexes)}, loads={dict(self.loads)})"


_shared: list[Registry] = []
_shared_lock = threading.Lock()


def shared_registry() -> Registry:
    """The process-wide :class:`Registry` (created on first call; thread-safe).

    ``panel serve attnflows_panel/app/app.py`` re-executes the app script for every session, but this
    module is imported once, so all sessions of the process meet here.
    """
    with _shared_lock:
        if not _shared:
            _shared.append(Registry())
        return _shared[0]
