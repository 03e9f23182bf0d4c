"""Facts about the loaded model and the engine's live occupancy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the API layer needs to know about the model being served."""

    path: Path
    model_id: str  # the file name without .gguf
    n_ctx: int  # most prompt + output tokens of one request
    n_ctx_train: int
    n_slots: int
    n_vocab: int
    bos_id: int
    eos_id: int
    add_bos: bool
    bos_text: str
    eos_text: str
    chat_template: str | None  # the GGUF's tokenizer.chat_template, if any
    quantization: str  # e.g. "Q4_K_M"
    description: str  # llama.cpp's one-line model description
    # Recurrent or hybrid memory (Mamba, RWKV, Jamba ...): no partial removal of cells
    is_recurrent: bool = False


@dataclass(frozen=True, slots=True)
class EngineStats:
    """A snapshot of the engine's queues and cache, for gauges."""

    running: int
    waiting: int
    slots_busy: int
    slots_total: int
    kv_cells_used: int
    kv_cells_total: int
