"""A query-side adapter: a small map trained on the query vectors only, over the base model's FROZEN document
vectors, free of Dagster so it can be trained, applied and tested on plain arrays.

What (the recipe of LlamaIndex's EmbeddingAdapterFinetuneEngine and of weightgain): the corpus keeps the
vectors the base model already gave it (the baseline index), and a query q becomes

    linear:  q' = normalise(W q + b)                         W (d x d) starts at the identity, b at 0
    mlp:     q' = normalise(W q + b + W2 relu(W1 q + b1))     the same, plus a residual MLP whose output
                                                              layer W2 starts at 0

so at initialisation q' = q and every score is the base model's. Nothing is re-embedded: training and serving
touch query vectors only, so it trains in seconds on a CPU and is swapped without rebuilding an index.

Loss: InfoNCE over the batch, as sentence-transformers' MultipleNegativesRankingLoss with scale 20 (a
temperature of 0.05): each query's candidates are every positive and every mined hard negative of the batch,
and the right one is its own positive. A candidate that is the row's positive under another index (the same
chunk twice in a batch) or a positive of another row asking the same query is masked out, not counted as a
negative (the NO_DUPLICATES sampler's job in the bi-encoder's training).

Safeguards: W - I is what weight decay pulls on (so it pulls towards the base model, not towards 0), and
early stopping on the held-out validation rows keeps the best epoch, the identity (epoch 0) included: an
adapter that does not help validation comes back as the identity.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

KINDS = ("linear", "mlp")
SAME = 1 - 1e-6          # cosine above this between two normalised vectors: the same text (a duplicate)


@dataclass
class AdapterSettings:
    kind: str = "linear"              # "linear" (d x d map) or "mlp" (that map + a residual MLP)
    hidden: int = 256                 # mlp only: the MLP's width (384 -> 256 -> 384 adds ~200k weights)
    learning_rate: float = 1e-3       # AdamW; a 384 x 384 map moves slowly from the identity at 1e-4
    weight_decay: float = 0.01        # on W - I: pulls towards the base model
    batch_size: int = 64              # 64 queries x (64 positives + 64 negatives) = 128 candidates each
    max_epochs: int = 30              # 3,000 rows / 64 = 47 steps an epoch: at most ~1,400 steps
    patience: int = 3                 # stop after this many epochs without a better validation loss
    min_delta: float = 1e-4           # what "better" means
    scale: float = 20.0               # MNRL's scale: logits = 20 x cosine (temperature 0.05)
    recall_k: int = 10                # validation recall@k over the pool of validation candidates
    seed: int = 42


@dataclass
class AdapterWeights:
    """The adapter's arrays (float32): W (d, d), b (d); for kind "mlp" also W1 (h, d), b1 (h), W2 (d, h)."""

    kind: str
    arrays: dict[str, np.ndarray]

    @property
    def dim(self) -> int:
        return int(self.arrays["W"].shape[0])


@dataclass
class AdapterResult:
    weights: AdapterWeights
    steps: int                        # optimiser steps taken (all epochs run, not only up to the best)
    epochs: int                       # epochs run
    best_epoch: int                   # 0 = the identity was best: no epoch improved validation
    stopped_early: bool
    seconds: float
    history: list[dict] = field(default_factory=list)   # per epoch: epoch, step, train_loss, val_loss, val_recall@k
    validation_identity: dict[str, float] = field(default_factory=dict)   # {"loss", "recall@k"} before training
    validation_best: dict[str, float] = field(default_factory=dict)       # the same, of the weights returned


def identity_adapter(dim: int, kind: str = "linear", hidden: int = 256, seed: int = 0) -> AdapterWeights:
    """The adapter that changes nothing: W = I, b = 0 (and for "mlp" a zero output layer)."""
    if kind not in KINDS:
        raise ValueError(f"adapter kind must be one of {KINDS}, got {kind!r}")
    arrays = {"W": np.eye(dim, dtype="float32"), "b": np.zeros(dim, dtype="float32")}
    if kind == "mlp":
        rng = np.random.default_rng(seed)
        arrays.update(W1=(rng.standard_normal((hidden, dim)) * np.sqrt(2.0 / dim)).astype("float32"),
                      b1=np.zeros(hidden, dtype="float32"), W2=np.zeros((dim, hidden), dtype="float32"))
    return AdapterWeights(kind, arrays)


def apply_adapter(weights: AdapterWeights, vecs: np.ndarray) -> np.ndarray:
    """The adapted query vectors, L2-normalised float32 (n, d): ready for a cosine search of the base index."""
    a = weights.arrays
    x = np.asarray(vecs, dtype="float64").reshape(-1, weights.dim)
    y = x @ a["W"].astype("float64").T + a["b"]
    if weights.kind == "mlp":
        y = y + np.maximum(x @ a["W1"].astype("float64").T + a["b1"], 0.0) @ a["W2"].astype("float64").T
    norms = np.linalg.norm(y, axis=1, keepdims=True)
    return (y / np.where(norms > 0, norms, 1.0)).astype("float32")


def save_adapter(weights: AdapterWeights, path: str | Path) -> Path:
    """An .npz with the arrays and the kind: all a serving process needs besides the base model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, kind=np.array(weights.kind), **weights.arrays)
    return path


def load_adapter(path: str | Path) -> AdapterWeights:
    with np.load(path) as data:
        kind = str(data["kind"])
        return AdapterWeights(kind, {k: data[k].astype("float32") for k in data.files if k != "kind"})


@dataclass
class QueryAdapter:
    """The serving side: a query's text -> its adapted vector, for a search of the base model's index.

    `encode` is the base model's (texts -> L2-normalised vectors, e.g. EmbedderResource.encode); the index
    searched must hold that same base model's document vectors (the adapter was trained over them)."""

    weights: AdapterWeights
    encode: Callable[[list[str]], np.ndarray]

    def adapt_queries(self, texts: list[str]) -> np.ndarray:
        """(len(texts), d) adapted, normalised vectors."""
        if not texts:
            return np.zeros((0, self.weights.dim), dtype="float32")
        return apply_adapter(self.weights, self.encode(list(texts)))

    def adapt_query(self, text: str) -> np.ndarray:
        """One query's adapted, normalised vector (d,): the base model's vector of `text` through the adapter."""
        return self.adapt_queries([text])[0]


def _module(dim: int, settings: AdapterSettings):
    import torch

    class Adapter(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.delta = torch.nn.Parameter(torch.zeros(dim, dim))   # W = I + delta: decay pulls W to I
            self.bias = torch.nn.Parameter(torch.zeros(dim))
            if settings.kind == "mlp":
                self.up = torch.nn.Linear(dim, settings.hidden)
                self.down = torch.nn.Linear(settings.hidden, dim, bias=False)
                torch.nn.init.zeros_(self.down.weight)                 # residual starts at 0: identity at init

        def forward(self, q):
            y = q + q @ self.delta.T + self.bias
            if settings.kind == "mlp":
                y = y + self.down(torch.relu(self.up(q)))
            return torch.nn.functional.normalize(y, dim=-1)

        def weights(self) -> AdapterWeights:
            W = (torch.eye(dim) + self.delta).detach().numpy().astype("float32")
            arrays = {"W": W, "b": self.bias.detach().numpy().astype("float32").copy()}
            if settings.kind == "mlp":
                arrays.update(W1=self.up.weight.detach().numpy().astype("float32").copy(),
                              b1=self.up.bias.detach().numpy().astype("float32").copy(),
                              W2=self.down.weight.detach().numpy().astype("float32").copy())
            return AdapterWeights(settings.kind, arrays)

    return Adapter()


def _false_negative_mask(base_q, pos, cands):
    """(B, C) True where candidate j must not count as a negative of row i: a copy of row i's positive, or
    the positive of another row with the same query (candidates 0..B-1 are the rows' positives, in order)."""
    import torch

    n = len(pos)
    mask = pos @ cands.T > SAME
    mask[:, :n] |= base_q @ base_q.T > SAME
    mask[torch.arange(n), torch.arange(n)] = False
    return mask


def _logits(adapted_q, base_q, pos, neg, scale: float):
    import torch

    cands = torch.cat([pos, neg])
    logits = scale * adapted_q @ cands.T
    return logits.masked_fill(_false_negative_mask(base_q, pos, cands), float("-inf"))


def _validate(model, val, settings: AdapterSettings) -> dict[str, float]:
    """Loss and recall@k of every validation row against the pool of all validation positives and negatives."""
    import torch

    q, pos, neg = val
    with torch.no_grad():
        logits = _logits(model(q), q, pos, neg, settings.scale)
        target = torch.arange(len(q))
        loss = torch.nn.functional.cross_entropy(logits, target).item()
        own = logits[target, target].unsqueeze(1)
        rank = (logits > own).sum(dim=1)
    return {"loss": float(loss), f"recall@{settings.recall_k}": float((rank < settings.recall_k).float().mean())}


def _as_tensor(x, dim: int, name: str):
    import torch

    arr = np.asarray(x, dtype="float32")
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{name} has shape {arr.shape}; expected (n, {dim}) like the query vectors")
    return torch.from_numpy(np.ascontiguousarray(arr))


def train_adapter(query_vecs: np.ndarray, pos_vecs: np.ndarray, neg_vecs: np.ndarray,
                  val: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                  settings: AdapterSettings = AdapterSettings(),
                  on_epoch: Callable[[dict], None] | None = None) -> AdapterResult:
    """Train an adapter on (query, positive, hard negative) rows of normalised base-model vectors; `val` the
    same for the validation rows (early stopping, best epoch kept). Row i of the three arrays is one triplet."""
    import torch

    # 1. The data: three aligned (n, d) arrays; the document side never changes
    if settings.kind not in KINDS:
        raise ValueError(f"adapter kind must be one of {KINDS}, got {settings.kind!r}")
    dim = int(np.asarray(query_vecs).shape[-1])
    q, p, n = (_as_tensor(x, dim, name) for x, name in ((query_vecs, "query_vecs"), (pos_vecs, "pos_vecs"),
                                                         (neg_vecs, "neg_vecs")))
    if not len(q) == len(p) == len(n):
        raise ValueError(f"{len(q)} query, {len(p)} positive and {len(n)} negative vectors: one of each per triplet")
    if len(q) < 2:
        raise ValueError(f"only {len(q)} training triplets: an adapter needs at least 2 (in-batch negatives); "
                         "write more queries (queries_per_chunk, max_chunks) or log more feedback")
    val_t = tuple(_as_tensor(x, dim, f"val[{i}]") for i, x in enumerate(val)) if val is not None and len(val[0]) else None

    # 2. The model at the identity, and its validation before any step
    t0 = time.perf_counter()
    torch.manual_seed(settings.seed)
    model = _module(dim, settings)
    decay = [model.delta] + ([model.down.weight] if settings.kind == "mlp" else [])
    rest = [prm for prm in model.parameters() if all(prm is not d for d in decay)]
    optimiser = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=settings.learning_rate)
    generator = torch.Generator().manual_seed(settings.seed)
    identity = _validate(model, val_t, settings) if val_t else {}
    best, best_epoch, best_weights, stale = identity.get("loss", float("inf")), 0, model.weights(), 0
    history, steps, batch = [], 0, min(settings.batch_size, len(q))

    # 3. Epochs of shuffled batches, validated after each; stop when validation stops improving
    epoch = 0
    for epoch in range(1, settings.max_epochs + 1):
        model.train()
        order = torch.randperm(len(q), generator=generator)
        losses = []
        for start in range(0, len(q) - batch + 1, batch):   # a short last batch has too few negatives: dropped
            idx = order[start:start + batch]
            logits = _logits(model(q[idx]), q[idx], p[idx], n[idx], settings.scale)
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(idx)))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
            steps += 1
        model.eval()
        row = {"epoch": epoch, "step": steps, "train_loss": float(np.mean(losses))}
        if val_t:
            v = _validate(model, val_t, settings)
            row.update({"val_loss": v["loss"], f"val_recall@{settings.recall_k}": v[f"recall@{settings.recall_k}"]})
            if v["loss"] < best - settings.min_delta:
                best, best_epoch, best_weights, stale = v["loss"], epoch, model.weights(), 0
            else:
                stale += 1
        history.append(row)
        if on_epoch:
            on_epoch(row)
        if val_t and stale >= settings.patience:
            break
    if not val_t:                                            # nothing to select on: the last epoch
        best_weights, best_epoch = model.weights(), epoch
    final = {}
    if val_t:
        final = {"loss": best, f"recall@{settings.recall_k}": identity[f"recall@{settings.recall_k}"] if best_epoch == 0
                 else next(h[f"val_recall@{settings.recall_k}"] for h in history if h["epoch"] == best_epoch)}
    return AdapterResult(best_weights, steps, epoch, best_epoch, bool(val_t) and epoch < settings.max_epochs,
                         time.perf_counter() - t0, history, identity, final)


def triplet_vectors(triplets, chunk_ids: list[str], chunk_vectors: np.ndarray,
                    anchor_vectors: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(query, positive, negative) arrays for triplet rows (a DataFrame with anchor, positive_chunk_id,
    negative_chunk_id): documents from the stored index vectors, queries from `anchor_vectors` (text -> base
    vector). Rows whose chunk the index lacks are left out; the last item counts them."""
    row_of = {c: i for i, c in enumerate(chunk_ids)}
    keep = [i for i, (p, n) in enumerate(zip(triplets["positive_chunk_id"], triplets["negative_chunk_id"]))
            if p in row_of and n in row_of]
    rows = triplets.iloc[keep]
    dim = chunk_vectors.shape[1] if len(chunk_vectors) else 0
    q = np.asarray([anchor_vectors[a] for a in rows["anchor"]], dtype="float32").reshape(len(rows), dim)
    p = chunk_vectors[[row_of[c] for c in rows["positive_chunk_id"]]].reshape(len(rows), dim)
    n = chunk_vectors[[row_of[c] for c in rows["negative_chunk_id"]]].reshape(len(rows), dim)
    return q, p, n, len(triplets) - len(rows)


def loss_figure(history: list[dict], recall_k: int = 10):
    """Training and validation loss per epoch (left), validation recall@k (right): is it still learning?"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    epochs = [h["epoch"] for h in history]
    left.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train (in-batch)")
    if history and "val_loss" in history[0]:
        left.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation (pool)")
        right.plot(epochs, [h[f"val_recall@{recall_k}"] for h in history], marker="o", color="#2ca02c")
    left.set_xlabel("epoch")
    left.set_ylabel("InfoNCE loss (scale 20)")
    left.legend(fontsize=8)
    right.set_xlabel("epoch")
    right.set_ylabel(f"validation recall@{recall_k}")
    fig.suptitle("query adapter over frozen document vectors", fontsize=10)
    fig.tight_layout()
    return fig
