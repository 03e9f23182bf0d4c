"""Quantize a GGUF file with llama.cpp's own quantizer (e.g. F16 -> Q4_K_M)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp

_PREFIX = "LLAMA_FTYPE_MOSTLY_"


def ftype_names() -> list[str]:
    """The quantization names llama.cpp accepts here, e.g. "Q4_K_M", "Q8_0"."""
    return sorted(name.removeprefix(_PREFIX) for name in dir(llama_cpp) if name.startswith(_PREFIX))


def quantize_gguf(src: Path, dst: Path, ftype: str, nthread: int = 0) -> None:
    """Write `src` quantized to `ftype` as `dst`; nthread 0 lets llama.cpp use every core."""
    code = getattr(llama_cpp, _PREFIX + ftype.upper(), None)
    if not isinstance(code, int):
        raise ValueError(f"unknown quantization {ftype!r}; valid: {', '.join(ftype_names())}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = code
    params.nthread = nthread
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {dst}, {ftype}) failed with code {rc}")
