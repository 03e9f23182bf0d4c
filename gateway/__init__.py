"""HTTP layer: the OpenAI-compatible API over the batching engine."""
