"""Continuous-batching engine over llama.cpp KV-cache slots."""
