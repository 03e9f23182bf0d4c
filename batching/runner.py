"""The one module that talks to llama.cpp: model, context, batches, KV cells, tokenizer.

Everything that touches the context (decode, logits, KV cells, grammar masks) runs on the
engine thread. `tokenize` and `make_grammar` read only the vocabulary, which llama.cpp leaves
unchanged after loading, so the API layer may call them from the event loop (as llama-server
tokenizes on its HTTP threads).
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import llama_cpp
import numpy as np

from batching.config import EngineConfig
from batching.info import ModelInfo
from batching.outputs import Filler, KvOp, PrefillChunk, SchedulerOutput
from batching.sampling_state import Grammar, Logits

logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # llama.cpp's chatter off

_I32P = ctypes.POINTER(ctypes.c_int32)
GPU_HOST_THREADS = 4  # llama.cpp's threads when the whole model is offloaded
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class ModelRunner(Protocol):
    """What the engine needs from a model; tests use a deterministic fake."""

    info: ModelInfo
    pieces: list[bytes]
    eog_ids: frozenset[int]
    # forward() returns while the device still computes (a GPU), so outputs handed over
    # then overlap its work (Engine.step); False where the decode is done when it returns
    decodes_async: bool

    def tokenize(self, text: str, add_bos: bool, parse_special: bool) -> list[int]: ...
    def apply_kv_ops(self, ops: list[KvOp]) -> None: ...
    def clear_slot(self, slot_id: int) -> None: ...
    def forward(self, out: SchedulerOutput) -> int: ...
    def logits(self) -> Logits: ...  # waits for the decode forward() started
    def make_grammar(self, gbnf: str) -> Grammar: ...
    def close(self) -> None: ...


class _Batch:
    """A llama_batch over numpy buffers so that filling it is a few vectorised copies."""

    def __init__(self, capacity: int) -> None:
        self.token = np.zeros(capacity, np.int32)
        self.pos = np.zeros(capacity, np.int32)
        self.n_seq_id = np.ones(capacity, np.int32)
        self.seq_id = np.zeros(capacity, np.int32)
        self.logits = np.zeros(capacity, np.int8)
        self.fillers: list[tuple[int, int]] = []  # (slot, position) of the last fill's fillers
        base = self.seq_id.ctypes.data
        self._seq_ptrs = (_I32P * capacity)(
            *(ctypes.cast(base + 4 * i, _I32P) for i in range(capacity))
        )
        self.struct = llama_cpp.llama_batch(
            n_tokens=0,
            token=self.token.ctypes.data_as(_I32P),
            embd=None,
            pos=self.pos.ctypes.data_as(_I32P),
            n_seq_id=self.n_seq_id.ctypes.data_as(_I32P),
            seq_id=ctypes.cast(self._seq_ptrs, ctypes.POINTER(_I32P)),
            logits=self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )

    def fill(self, out: SchedulerOutput, filler_pos: Callable[[int], int | None]) -> int:
        """Write the step's tokens in batch order; return how many logits rows it will give.

        A filler goes at `filler_pos(slot)`, or is left out where that is None; the
        (slot, position) of each one written is left in `self.fillers`."""
        n = rows = 0
        self.fillers = []
        for entry in out.entries:
            if isinstance(entry, Filler):
                pos = filler_pos(entry.slot_id)
                if pos is None:
                    continue
                self.token[n], self.pos[n], self.seq_id[n] = 0, pos, entry.slot_id
                self.logits[n] = 0
                self.fillers.append((entry.slot_id, pos))
                n += 1
            elif isinstance(entry, PrefillChunk):
                seq, m = entry.seq, entry.end - entry.start
                self.token[n : n + m] = seq.prompt_ids[entry.start : entry.end]
                self.pos[n : n + m] = np.arange(entry.start, entry.end, dtype=np.int32)
                self.seq_id[n : n + m] = seq.slot_id or 0
                self.logits[n : n + m] = 0
                if entry.end == seq.num_prompt_tokens:
                    self.logits[n + m - 1] = 1
                    rows += 1
                n += m
            else:
                self.token[n] = entry.output_ids[-1]
                self.pos[n] = entry.num_tokens - 1
                self.seq_id[n] = entry.slot_id or 0
                self.logits[n] = 1
                n, rows = n + 1, rows + 1
        self.struct.n_tokens = n
        return rows


class LlamaGrammar:
    """llama.cpp's GBNF sampler, used only to mask a row and to follow the chosen tokens."""

    def __init__(self, smpl: Any, n_vocab: int) -> None:
        self._smpl = smpl
        self._data = np.zeros(n_vocab, _TOKEN_DATA)
        self._data["id"] = np.arange(n_vocab, dtype=np.int32)
        self._arr = llama_cpp.llama_token_data_array(
            data=ctypes.cast(self._data.ctypes.data, llama_cpp.llama_token_data_p),
            size=n_vocab,
            selected=-1,
            sorted=False,
        )

    def allows(self, token_id: int) -> bool:
        one = self._data[:1]
        one["id"], one["logit"] = token_id, 0.0
        self._arr.size, self._arr.selected, self._arr.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(self._smpl, ctypes.byref(self._arr))
        return bool(np.isfinite(one["logit"][0]))

    def mask(self, row: Logits) -> None:
        self._data["id"] = np.arange(row.shape[0], dtype=np.int32)
        self._data["logit"] = row
        self._arr.size, self._arr.selected, self._arr.sorted = row.shape[0], -1, False
        llama_cpp.llama_sampler_apply(self._smpl, ctypes.byref(self._arr))
        row[self._data["id"]] = self._data["logit"]

    def accept(self, token_id: int) -> None:
        llama_cpp.llama_sampler_accept(self._smpl, token_id)

    def close(self) -> None:
        if self._smpl:
            llama_cpp.llama_sampler_free(self._smpl)
            self._smpl = None


class _ParsedGrammars:
    """Parsed grammars by their text (LRU): a request whose grammar was seen before gets a
    clone of the parsed sampler (~0.1 ms) instead of a new parse (tens of ms for a large
    tools grammar, on the event loop). The templates are never sampled from."""

    def __init__(self, vocab: Any, capacity: int = 256) -> None:
        self._vocab = vocab
        self._capacity = capacity
        self._parsed: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def sampler(self, gbnf: str) -> Any:
        with self._lock:
            return self._clone(gbnf)

    def _clone(self, gbnf: str) -> Any:
        template = self._parsed.get(gbnf)
        if template is None:
            template = llama_cpp.llama_sampler_init_grammar(self._vocab, gbnf.encode(), b"root")
            if not template:
                raise ValueError("the grammar does not parse as GBNF with a 'root' rule")
            self._parsed[gbnf] = template
            if len(self._parsed) > self._capacity:
                llama_cpp.llama_sampler_free(self._parsed.popitem(last=False)[1])
        self._parsed.move_to_end(gbnf)
        return llama_cpp.llama_sampler_clone(template)

    def close(self) -> None:
        with self._lock:
            while self._parsed:
                llama_cpp.llama_sampler_free(self._parsed.popitem()[1])


class LlamaRunner:
    """One llama.cpp model and context; one KV-cache sequence per slot."""

    def __init__(self, config: EngineConfig) -> None:
        path = Path(config.model_path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        llama_cpp.llama_backend_init()
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = 999 if config.n_gpu_layers < 0 else config.n_gpu_layers
        self._model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise ValueError(f"llama.cpp could not load {path} as a GGUF model")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self._ctx = llama_cpp.llama_init_from_model(self._model, self._context_params(config))
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise ValueError(f"llama.cpp could not create a context of {config.n_ctx} cells")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._is_unified = config.kv_unified
        self.n_ctx_seq = llama_cpp.llama_n_ctx_seq(self._ctx)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.pieces = [self._piece(t, special=False) for t in range(self.n_vocab)]
        self.eog_ids = frozenset(
            t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)
        )
        self._batch = _Batch(config.max_call_tokens)
        self._grammars = _ParsedGrammars(self._vocab)
        self._rows = 0
        self._pending = False  # a decode started and not yet waited for
        self.decodes_async = config.n_gpu_layers != 0 and bool(
            llama_cpp.llama_supports_gpu_offload()
        )
        self.info = self._model_info(path, config)

    @staticmethod
    def _context_params(config: EngineConfig) -> Any:
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = config.n_ctx
        cparams.n_batch = config.max_call_tokens
        cparams.n_ubatch = min(config.n_ubatch, config.n_batch)
        cparams.n_seq_max = config.n_slots
        cparams.kv_unified = config.kv_unified
        threads = config.n_threads or _default_threads(config.n_gpu_layers)
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.flash_attn_type = (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
            if config.flash_attn
            else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        cparams.no_perf = True
        return cparams

    def _model_info(self, path: Path, config: EngineConfig) -> ModelInfo:
        n_ctx_train = llama_cpp.llama_model_n_ctx_train(self._model)
        n_ctx = min(self.n_ctx_seq, n_ctx_train) if n_ctx_train > 0 else self.n_ctx_seq
        if config.max_seq_len:
            n_ctx = min(n_ctx, config.max_seq_len)
        bos = llama_cpp.llama_vocab_bos(self._vocab)
        eos = llama_cpp.llama_vocab_eos(self._vocab)
        template = llama_cpp.llama_model_chat_template(self._model, None)
        desc = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self._model, desc, 256)
        return ModelInfo(
            path=path,
            model_id=path.name.removesuffix(".gguf"),
            n_ctx=n_ctx,
            n_ctx_train=n_ctx_train,
            n_slots=config.n_slots,
            n_vocab=self.n_vocab,
            bos_id=bos,
            eos_id=eos,
            add_bos=bool(llama_cpp.llama_vocab_get_add_bos(self._vocab)),
            bos_text=self._piece(bos, special=True).decode("utf-8", "replace"),
            eos_text=self._piece(eos, special=True).decode("utf-8", "replace"),
            chat_template=template.decode("utf-8") if template else None,
            quantization=_ftype_name(llama_cpp.llama_model_ftype(self._model)),
            description=desc.value.decode("utf-8", "replace"),
            is_recurrent=bool(
                llama_cpp.llama_model_is_recurrent(self._model)
                or llama_cpp.llama_model_is_hybrid(self._model)
            ),
        )

    def _piece(self, token: int, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(128)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 128, 0, special)
        return buf.raw[: max(n, 0)]

    def tokenize(self, text: str, add_bos: bool, parse_special: bool) -> list[int]:
        """Text to token ids (llama.cpp's tokenizer; safe to call from another thread)."""
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, cap, add_bos, parse_special)
        if n < 0:
            cap = -n
            buf = (llama_cpp.llama_token * cap)()
            n = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), buf, cap, add_bos, parse_special
            )
        return list(buf[:n])

    def apply_kv_ops(self, ops: list[KvOp]) -> None:
        self._finish_decode()
        for op in ops:
            if op.kind == "rm":
                if not llama_cpp.llama_memory_seq_rm(self._mem, op.dst, op.pos, -1):
                    llama_cpp.llama_memory_seq_rm(self._mem, op.dst, -1, -1)
            else:
                llama_cpp.llama_memory_seq_rm(self._mem, op.dst, -1, -1)
                # across per-sequence streams llama.cpp copies whole streams only (it asserts
                # otherwise); the source holds exactly the prompt when a fork is made
                p0, p1 = (0, op.pos) if self._is_unified else (-1, -1)
                llama_cpp.llama_memory_seq_cp(self._mem, op.src, op.dst, p0, p1)

    def clear_slot(self, slot_id: int) -> None:
        self._finish_decode()
        llama_cpp.llama_memory_seq_rm(self._mem, slot_id, -1, -1)

    def slot_length(self, slot_id: int) -> int:
        """How many positions a slot's KV cells hold (its largest position + 1)."""
        return int(llama_cpp.llama_memory_seq_pos_max(self._mem, slot_id)) + 1

    def forward(self, out: SchedulerOutput) -> int:
        """Start one llama_decode over the whole step; llama.cpp's return code (1 = no KV
        room). With a GPU the work goes on after this returns: logits() waits for it."""
        self._rows = self._batch.fill(out, self._filler_pos)
        self._pending = True
        rc = int(llama_cpp.llama_decode(self._ctx, self._batch.struct))
        if rc != 0:
            self._finish_decode()
        return rc

    def _finish_decode(self) -> None:
        """Wait for the decode forward() started; its throwaway filler cells go then."""
        if self._pending:
            self._pending = False
            llama_cpp.llama_synchronize(self._ctx)
            for slot_id, pos in self._batch.fillers:
                llama_cpp.llama_memory_seq_rm(self._mem, slot_id, pos, -1)

    def _filler_pos(self, slot_id: int) -> int | None:
        """The next position of a slot's stream, or None when it has no cell to spare."""
        pos = self.slot_length(slot_id)
        return pos if pos < self.n_ctx_seq - 1 else None

    def logits(self) -> Logits:
        """The last decode's logits rows, in batch order, as a view (valid until next decode);
        waits for the decode to finish."""
        self._finish_decode()
        ptr = llama_cpp.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(ptr, shape=(self._rows, self.n_vocab))

    def make_grammar(self, gbnf: str) -> Grammar:
        """A grammar sampler for one sequence (thread-safe, as tokenize is)."""
        return LlamaGrammar(self._grammars.sampler(gbnf), self.n_vocab)

    def close(self) -> None:
        self._grammars.close()
        if self._ctx:
            self._finish_decode()
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None


def _default_threads(n_gpu_layers: int) -> int:
    """llama.cpp's CPU threads: with every layer on the GPU they only wait for it, and idle
    spinning workers take cores from the engine and HTTP threads; else every core computes."""
    cores = os.cpu_count() or 4
    return min(GPU_HOST_THREADS, cores) if n_gpu_layers < 0 or n_gpu_layers >= 99 else cores


def _ftype_name(ftype: int) -> str:
    for name in dir(llama_cpp):
        if (
            name.startswith(("LLAMA_FTYPE_MOSTLY_", "LLAMA_FTYPE_ALL_"))
            and getattr(llama_cpp, name) == ftype
        ):
            return name.removeprefix("LLAMA_FTYPE_MOSTLY_").removeprefix("LLAMA_FTYPE_ALL_")
    return f"ftype-{ftype}"
