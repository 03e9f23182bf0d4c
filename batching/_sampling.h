/* The sampling kernels' types and entry points (_sampling.c; _parallel.c splits a call's rows
 * between the threads of a pool). batching/kernels.py mirrors the structs as numpy dtypes. */
#ifndef LG_SAMPLING_H
#define LG_SAMPLING_H

#include <stdint.h>

typedef struct {
    float inv_temp; /* 0: greedy (argmax) */
    float top_p;    /* 1: off */
    float min_p;    /* 0: off */
    int32_t top_k;  /* 0 or >= n_vocab: off */
    uint64_t seed;
    uint64_t position; /* how many tokens this sequence drew before: the draw's key */
} lg_params;

/* One row's sparse edits before sampling: logit_bias, the repetition penalty over the tokens
 * seen (prompt and output), and frequency/presence penalties over the tokens generated. */
typedef struct {
    const int32_t *bias_ids;
    const float *bias_values;
    const int32_t *seen_ids;
    const int32_t *penalty_ids;
    const float *counts; /* indexed by token id */
    int32_t n_bias, n_seen, n_penalty;
    float repetition, frequency, presence;
} lg_edits;

int64_t lg_scratch_bytes(int32_t n_vocab);
void lg_sample(int32_t n_rows, int32_t n_vocab, const float *const *rows, const lg_params *params,
               const lg_edits *edits, const float *table, int64_t n_table, void *scratch,
               int32_t *out);
void lg_logprobs(int32_t n_rows, int32_t n_vocab, const float *const *rows, const int32_t *tokens,
                 int32_t n_top, float *token_lp, int32_t *top_ids, float *top_lp, void *scratch);

#endif
