/* One call samples (or scores) every row of a step on the threads of a pool: part k of n takes
 * rows [n_rows * k / n, n_rows * (k + 1) / n) with its own scratch buffer. */
#include "_pool.h"
#include "_sampling.h"

#include <stddef.h>

typedef struct {
    int32_t n_rows, n_vocab, n_top;
    const float *const *rows;
    const lg_params *params;
    const lg_edits *edits;
    const float *table;
    int64_t n_table;
    const int32_t *tokens;
    float *token_lp, *top_lp;
    int32_t *top_ids, *out;
    char *scratch;
    int64_t scratch_bytes; /* per part */
} rows_job;

static int32_t bound(const rows_job *job, int part, int n_parts) {
    return (int32_t)((int64_t)job->n_rows * part / n_parts);
}

static void sample_part(void *arg, int part, int n_parts) {
    const rows_job *j = arg;
    int32_t lo = bound(j, part, n_parts), hi = bound(j, part + 1, n_parts);
    lg_sample(hi - lo, j->n_vocab, j->rows + lo, j->params + lo, j->edits ? j->edits + lo : NULL,
              j->table, j->n_table, j->scratch + (size_t)part * (size_t)j->scratch_bytes,
              j->out + lo);
}

static void logprobs_part(void *arg, int part, int n_parts) {
    const rows_job *j = arg;
    int32_t lo = bound(j, part, n_parts), hi = bound(j, part + 1, n_parts);
    size_t top = (size_t)lo * (size_t)(j->n_top > 0 ? j->n_top : 1);
    lg_logprobs(hi - lo, j->n_vocab, j->rows + lo, j->tokens + lo, j->n_top, j->token_lp + lo,
                j->top_ids + top, j->top_lp + top,
                j->scratch + (size_t)part * (size_t)j->scratch_bytes);
}

/* lg_sample over n_parts parts; `scratch` holds n_parts buffers of lg_scratch_bytes(n_vocab). */
void lg_sample_parallel(lg_pool *pool, int32_t n_parts, int32_t n_rows, int32_t n_vocab,
                        const float *const *rows, const lg_params *params, const lg_edits *edits,
                        const float *table, int64_t n_table, void *scratch, int32_t *out) {
    rows_job job = {.n_rows = n_rows, .n_vocab = n_vocab, .rows = rows, .params = params,
                    .edits = edits, .table = table, .n_table = n_table, .out = out,
                    .scratch = scratch, .scratch_bytes = lg_scratch_bytes(n_vocab)};
    lg_pool_run(pool, sample_part, &job, n_parts);
}

/* lg_logprobs over n_parts parts; top_ids and top_lp hold max(n_top, 1) entries per row. */
void lg_logprobs_parallel(lg_pool *pool, int32_t n_parts, int32_t n_rows, int32_t n_vocab,
                          const float *const *rows, const int32_t *tokens, int32_t n_top,
                          float *token_lp, int32_t *top_ids, float *top_lp, void *scratch) {
    rows_job job = {.n_rows = n_rows, .n_vocab = n_vocab, .n_top = n_top, .rows = rows,
                    .tokens = tokens, .token_lp = token_lp, .top_ids = top_ids, .top_lp = top_lp,
                    .scratch = scratch, .scratch_bytes = lg_scratch_bytes(n_vocab)};
    lg_pool_run(pool, logprobs_part, &job, n_parts);
}
