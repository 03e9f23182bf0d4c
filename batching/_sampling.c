/* Sampling kernels for the engine: one call samples (or scores) every row of a step.
 *
 * Plain C with no Python API: batching/kernels.py loads the shared library with ctypes, which
 * releases the GIL for the whole call. Rows are read in place, never sorted or copied, and no
 * call allocates: the caller hands in one scratch buffer per call.
 *
 * Sampling is exact and robust to tiny changes in the logits. Temperature, min-p and top-k
 * define the candidates; the token is the Gumbel-max argmax_i (x_i / T + g_i), where the noise
 * g is a window of a fixed table of Gumbel variates chosen by (seed, position, attempt), so
 * the same seed draws the same token in any batch unless two candidates nearly tie. top-p is
 * a rejection test: the winner is kept when the candidates strictly more likely than it carry
 * less than top_p of the mass (it lies in the nucleus); otherwise the next attempt draws with
 * fresh noise. A kept token is distributed exactly as the renormalised nucleus. After
 * MAX_ATTEMPTS refusals (after the first one when top_p < 0.5: a small nucleus refuses most
 * draws) the nucleus floor is found exactly and the draw is made inside it.
 */
#include "_sampling.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang_analyzer__)
#define HOT __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define HOT
#endif

#define LANES 32        /* independent accumulators: lets the compiler vectorise reductions */
#define MAX_ATTEMPTS 4  /* top-p rejection draws before the exact nucleus floor */
#define EXP_MIN -87.0f  /* below this exp() underflows float anyway */

/* ---------------------------------------------------------------- small helpers */

static uint64_t mix64(uint64_t x) { /* splitmix64's finaliser */
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Where the noise window of one draw starts in a table of `span` + n_vocab variates. */
static uint64_t noise_start(uint64_t seed, uint64_t position, uint64_t attempt, uint64_t span) {
    return mix64(mix64(seed ^ 0x5EED5EED5EED5EEDull) + position * 0x100000001B3ull + attempt) % span;
}

/* exp(d) for d <= 0, to about 2 ulp, written so that the compiler vectorises the loops using it. */
static inline float fast_exp(float d) {
    d = d < EXP_MIN ? EXP_MIN : d;
    /* round to nearest by the 1.5 * 2^23 trick: vectorises without SSE4.1's roundps */
    float n = (d * 1.44269504f + 12582912.0f) - 12582912.0f;
    float r = d - n * 0.693145752f;
    r = r - n * 1.42860677e-06f;
    float p = 1.0f / 720.0f; /* Taylor to r^6: |r| <= ln2/2 leaves a relative error near 1e-7 */
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

HOT static float row_max(const float *x, int32_t n) {
    float acc[LANES];
    for (int j = 0; j < LANES; j++) acc[j] = -INFINITY;
    int32_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] = x[i + j] > acc[j] ? x[i + j] : acc[j];
    float m = -INFINITY;
    for (int j = 0; j < LANES; j++) m = acc[j] > m ? acc[j] : m;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* The first index of the row's largest value (np.argmax's choice), and that value. */
HOT static int32_t row_argmax(const float *x, int32_t n, float *max_out) {
    float acc[LANES];
    int32_t at[LANES];
    for (int j = 0; j < LANES; j++) acc[j] = -INFINITY, at[j] = j < n ? j : 0;
    int32_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            int better = x[i + j] > acc[j];
            acc[j] = better ? x[i + j] : acc[j];
            at[j] = better ? i + j : at[j];
        }
    float m = acc[0];
    int32_t best = at[0];
    for (int j = 1; j < LANES; j++)
        if (acc[j] > m || (acc[j] == m && at[j] < best)) m = acc[j], best = at[j];
    for (; i < n; i++)
        if (x[i] > m) m = x[i], best = i;
    *max_out = m;
    return best;
}

/* The Gumbel-max winner among x[0..n) at or above floor: argmax of x_i * inv_t + g[id_i],
 * with id_i = ids[i] (or i without ids). Returns an index into x; *max_out gets max(x). */
HOT static int32_t gumbel_argmax(const float *x, const int32_t *ids, int32_t n, float inv_t,
                                 float floor, const float *g, float *max_out) {
    float best = -INFINITY, m = -INFINITY;
    int32_t at = 0;
    if (ids != NULL) {
        for (int32_t i = 0; i < n; i++) {
            float s = x[i] * inv_t + g[ids[i]];
            if (x[i] >= floor && s > best) best = s, at = i;
            m = x[i] > m ? x[i] : m;
        }
        *max_out = m;
        return at;
    }
    float acc[LANES], top[LANES];
    int32_t where[LANES];
    for (int j = 0; j < LANES; j++) acc[j] = top[j] = -INFINITY, where[j] = 0;
    int32_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            float v = x[i + j];
            float s = v >= floor ? v * inv_t + g[i + j] : -INFINITY;
            int better = s > acc[j];
            acc[j] = better ? s : acc[j];
            where[j] = better ? i + j : where[j];
            top[j] = v > top[j] ? v : top[j];
        }
    for (int j = 0; j < LANES; j++) {
        if (acc[j] > best || (acc[j] == best && where[j] < at)) best = acc[j], at = where[j];
        m = top[j] > m ? top[j] : m;
    }
    for (; i < n; i++) {
        float s = x[i] * inv_t + g[i];
        if (x[i] >= floor && s > best) best = s, at = i;
        m = x[i] > m ? x[i] : m;
    }
    *max_out = m;
    return at;
}

/* In one pass: the weights w_i = exp((x_i - m) * inv_t) of the candidates (x_i >= floor; 0
 * for the others), their mass, and the mass of those strictly above v. */
HOT static void masses(const float *x, int32_t n, float m, float inv_t, float floor, float v,
                       float *w, double *total_out, double *above_out) {
    float total[LANES] = {0}, above[LANES] = {0};
    int32_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            float e = fast_exp((x[i + j] - m) * inv_t);
            e = x[i + j] >= floor ? e : 0.0f;
            w[i + j] = e;
            total[j] += e;
            above[j] += x[i + j] > v ? e : 0.0f;
        }
    double t = 0.0, a = 0.0;
    for (int j = 0; j < LANES; j++) t += total[j], a += above[j];
    for (; i < n; i++) {
        float e = x[i] >= floor ? fast_exp((x[i] - m) * inv_t) : 0.0f;
        w[i] = e;
        t += e;
        a += x[i] > v ? e : 0.0f;
    }
    *total_out = t;
    *above_out = a;
}

/* Value of the k-th largest of x[0..n) (1 <= k <= n); reorders x. Quickselect, median of 3. */
static float kth_largest(float *x, int32_t n, int32_t k) {
    int32_t lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        float a = x[lo], b = x[mid], c = x[hi];
        float pivot = (a > b) ? ((b > c) ? b : (a > c ? c : a)) : ((a > c) ? a : (b > c ? c : b));
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (x[i] > pivot) i++;
            while (x[j] < pivot) j--;
            if (i <= j) {
                float t = x[i];
                x[i] = x[j];
                x[j] = t;
                i++;
                j--;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            return x[want];
    }
    return x[want];
}

#define CB 16 /* tokens per candidate block */
#define HEAP_K 256 /* up to this k the k-th largest comes from a min-heap, else quickselect */

/* The k-th largest of x[0..n) (1 <= k <= n) with a min-heap of the k best seen: after the
 * first few hundred values almost every value loses to the heap's minimum at one compare. */
static float kth_largest_heap(const float *x, int32_t n, int32_t k, float *heap) {
    for (int32_t i = 0; i < k; i++) { /* sift up */
        int32_t c = i;
        heap[c] = x[i];
        while (c > 0 && heap[(c - 1) / 2] > heap[c]) {
            float t = heap[c];
            heap[c] = heap[(c - 1) / 2];
            heap[(c - 1) / 2] = t;
            c = (c - 1) / 2;
        }
    }
    for (int32_t i = k; i < n; i++) {
        if (!(x[i] > heap[0])) continue;
        int32_t c = 0; /* replace the minimum, sift down */
        heap[0] = x[i];
        for (;;) {
            int32_t l = 2 * c + 1, r = l + 1, s = c;
            if (l < k && heap[l] < heap[s]) s = l;
            if (r < k && heap[r] < heap[s]) s = r;
            if (s == c) break;
            float t = heap[c];
            heap[c] = heap[s];
            heap[s] = t;
            c = s;
        }
    }
    return heap[0];
}

/* The k-th largest of x[0..n) without reordering x; `work` holds n floats. */
static float kth_of(const float *x, int32_t n, int32_t k, float *work) {
    if (k <= HEAP_K) return kth_largest_heap(x, n, k, work);
    memcpy(work, x, sizeof(float) * (size_t)n);
    return kth_largest(work, n, k);
}

/* Maxima of the row's whole blocks of CB tokens. */
HOT static void block_maxima(const float *x, int32_t n_blocks, float *maxima) {
    for (int32_t b = 0; b < n_blocks; b++) {
        const float *p = x + b * CB;
        float t[CB / 2];
        for (int j = 0; j < CB / 2; j++) t[j] = p[j] > p[j + CB / 2] ? p[j] : p[j + CB / 2];
        for (int j = 0; j < CB / 4; j++) t[j] = t[j] > t[j + CB / 4] ? t[j] : t[j + CB / 4];
        for (int j = 0; j < CB / 8; j++) t[j] = t[j] > t[j + CB / 8] ? t[j] : t[j + CB / 8];
        maxima[b] = t[0] > t[1] ? t[0] : t[1];
    }
}

/* The blocks that surely hold the row's k best tokens (the k blocks with the largest maxima,
 * and any tied with them), gathered in token order: values into vals, token ids into ids.
 * Returns how many tokens were gathered. `work` holds n / CB + n floats. */
static int32_t top_k_candidates(const float *x, int32_t n, int32_t k, float *vals, int32_t *ids,
                                float *work) {
    int32_t n_blocks = n / CB, m = 0;
    if (n_blocks <= k) {
        for (int32_t i = 0; i < n; i++) vals[i] = x[i], ids[i] = i;
        return n;
    }
    float *maxima = work, *copy = work + n_blocks;
    block_maxima(x, n_blocks, maxima);
    float block_floor = kth_of(maxima, n_blocks, k, copy);
    for (int32_t b = 0; b < n_blocks; b++)
        if (maxima[b] >= block_floor)
            for (int j = 0; j < CB; j++) vals[m] = x[b * CB + j], ids[m++] = b * CB + j;
    for (int32_t i = n_blocks * CB; i < n; i++) /* the partial last block always joins */
        vals[m] = x[i], ids[m++] = i;
    return m;
}

/* Sum of w over the tokens whose logit is strictly above v, and how many they are. */
HOT static double mass_count_above(const float *x, const float *w, int32_t n, float v,
                                   int32_t *count) {
    float acc[LANES] = {0};
    int32_t cnt[LANES] = {0};
    int32_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            int above = x[i + j] > v;
            acc[j] += above ? w[i + j] : 0.0f;
            cnt[j] += above;
        }
    double s = 0.0;
    int32_t c = 0;
    for (int j = 0; j < LANES; j++) s += acc[j], c += cnt[j];
    for (; i < n; i++)
        if (x[i] > v) s += w[i], c++;
    *count = c;
    return s;
}

/* The (value, weight) pairs of the tokens in (lo, hi] into buf, up to FLOOR_GATHER of them;
 * returns how many, or -1 when there are more. Blocks of LANES tokens are tested vector-wide
 * first: on a flat row the bracket holds a few dozen of 32,000 tokens. */
#define FLOOR_GATHER 48
HOT static int32_t gather_between(const float *x, const float *w, int32_t n, float lo, float hi,
                                  float *buf) {
    int32_t k = 0, i = 0;
    for (; i < n; i += LANES) {
        int32_t end = i + LANES < n ? i + LANES : n, any = 0;
        if (end - i == LANES) {
            for (int j = 0; j < LANES; j++) any |= (x[i + j] > lo) & (x[i + j] <= hi);
            if (!any) continue;
        }
        for (int32_t t = i; t < end; t++)
            if (x[t] > lo && x[t] <= hi) {
                if (k == FLOOR_GATHER) return -1;
                buf[2 * k] = x[t], buf[2 * k + 1] = w[t], k++;
            }
    }
    return k;
}

/* The nucleus floor: the largest logit v such that the tokens at or above v carry at least
 * `want` of the mass, given that the tokens strictly above lo carry at least `want`.
 * Bisection narrows (lo, hi] until it holds at most FLOOR_GATHER tokens (about seven passes
 * on a flat row), which are then gathered into `buf` (2 * FLOOR_GATHER floats) and walked
 * best first. Bisecting down to float precision instead took about 25 passes. */
static float nucleus_floor(const float *x, const float *w, int32_t n, float lo, float hi,
                           double want, float *buf) {
    int32_t n_lo, n_hi = 0;
    double mass_hi = 0.0; /* mass strictly above hi: nothing lies above the row's maximum */
    mass_count_above(x, w, n, lo, &n_lo);
    for (int it = 0; it < 64 && n_lo - n_hi > FLOOR_GATHER; it++) {
        float mid = lo + (hi - lo) * 0.5f;
        if (mid <= lo || mid >= hi) break; /* ties wider than the bracket: gather them all */
        int32_t n_mid;
        double mass = mass_count_above(x, w, n, mid, &n_mid);
        if (mass >= want)
            lo = mid, n_lo = n_mid;
        else
            hi = mid, n_hi = n_mid, mass_hi = mass;
    }
    /* the tokens in (lo, hi], best first; F is the first value whose running mass reaches want */
    float best = hi;
    int32_t k = gather_between(x, w, n, lo, hi, buf);
    /* lo and hi are neighbouring floats, so the many tokens between them tie at hi (or, on a
     * row of NaNs or with a range no 64 halvings close, hi is a safe answer rather than exact) */
    if (k < 0) return hi;
    for (int32_t a = 1; a < k; a++) { /* insertion sort of (value, weight) pairs, best first */
        float v = buf[2 * a], wt = buf[2 * a + 1];
        int32_t b = a - 1;
        while (b >= 0 && buf[2 * b] < v) {
            buf[2 * b + 2] = buf[2 * b], buf[2 * b + 3] = buf[2 * b + 1];
            b--;
        }
        buf[2 * b + 2] = v, buf[2 * b + 3] = wt;
    }
    double acc = mass_hi;
    for (int32_t a = 0; a < k; a++) {
        acc += buf[2 * a + 1];
        best = buf[2 * a];
        if ((a + 1 == k || buf[2 * a + 2] < best) && acc >= want) return best;
    }
    return best; /* rounding kept the running mass just short: the lowest gathered value */
}

/* Draws from candidates x[0..n) (ids: their token ids, or NULL for a whole row) at or above
 * floor; returns an index into x. `buf` holds 2 * FLOOR_GATHER floats. */
static int32_t draw(const float *x, const int32_t *ids, int32_t n, float floor,
                    const lg_params *p, const float *table, uint64_t span, float *w,
                    float *buf) {
    float m = -INFINITY, lo = floor;
    double total = 0.0, above = 0.0;
    int32_t n_above; /* not needed here */
    /* a nucleus under half the mass would refuse most second draws too: find its floor now */
    uint64_t attempts = p->top_p >= 0.5f ? MAX_ATTEMPTS : 1;
    for (uint64_t a = 0; a < attempts; a++) {
        const float *g = table + noise_start(p->seed, p->position, a, span);
        int32_t t = gumbel_argmax(x, ids, n, p->inv_temp, floor, g, &m);
        if (p->top_p >= 1.0f) return t;
        if (a == 0) /* one pass: the weights, kept for later attempts, and both masses */
            masses(x, n, m, p->inv_temp, floor, x[t], w, &total, &above);
        else
            above = mass_count_above(x, w, n, x[t], &n_above);
        if (above < (double)p->top_p * total) return t; /* the winner lies in the nucleus */
        lo = x[t] > lo ? x[t] : lo; /* a refused winner lies below the nucleus floor */
    }
    float nf = nucleus_floor(x, w, n, lo, m, (double)p->top_p * total, buf);
    const float *g = table + noise_start(p->seed, p->position, MAX_ATTEMPTS, span);
    return gumbel_argmax(x, ids, n, p->inv_temp, nf, g, &m);
}

/* ---------------------------------------------------------------- the API */

/* Bytes of scratch one call of lg_sample or lg_logprobs needs. */
int64_t lg_scratch_bytes(int32_t n_vocab) {
    int64_t n = n_vocab;
    return (6 * n + n / CB + 64 + 2 * FLOOR_GATHER) * 4;
}

/* A copy of row x with the edits applied, in `copy`; the logits themselves are never written
 * (a row can be shared by the choices of one request, sampled on different threads). */
static const float *edited(const float *x, int32_t n, const lg_edits *e, float *copy) {
    if (e->n_bias == 0 && e->n_seen == 0 && e->n_penalty == 0) return x;
    memcpy(copy, x, sizeof(float) * (size_t)n);
    for (int32_t i = 0; i < e->n_bias; i++) copy[e->bias_ids[i]] += e->bias_values[i];
    for (int32_t i = 0; i < e->n_seen; i++) {
        float v = copy[e->seen_ids[i]];
        copy[e->seen_ids[i]] = v > 0.0f ? v / e->repetition : v * e->repetition;
    }
    for (int32_t i = 0; i < e->n_penalty; i++) {
        int32_t t = e->penalty_ids[i];
        copy[t] -= e->frequency * e->counts[t] + e->presence;
    }
    return copy;
}

/* Picks one token per row; `table` holds n_table Gumbel variates (n_table > n_vocab); `edits`
 * (one per row) may be NULL when no row has any. */
void lg_sample(int32_t n_rows, int32_t n_vocab, const float *const *rows, const lg_params *params,
               const lg_edits *edits, const float *table, int64_t n_table, void *scratch,
               int32_t *out) {
    int64_t n = n_vocab;
    uint64_t span = (uint64_t)(n_table - n_vocab);
    float *w = (float *)scratch, *vals = w + n, *work = vals + n;
    int32_t *ids = (int32_t *)(work + n + n / CB + 16);
    float *copy = (float *)(ids + n), *buf = copy + n;
    for (int32_t r = 0; r < n_rows; r++) {
        const float *x = edits != NULL ? edited(rows[r], n_vocab, &edits[r], copy) : rows[r];
        const lg_params *p = &params[r];
        if (p->inv_temp == 0.0f) {
            float m;
            out[r] = row_argmax(x, n_vocab, &m);
            continue;
        }
        if (p->top_k > 0 && p->top_k < n_vocab) {
            int32_t c = top_k_candidates(x, n_vocab, p->top_k, vals, ids, work);
            float m = row_max(vals, c);
            float kth = kth_of(vals, c, p->top_k < c ? p->top_k : c, work);
            float floor = p->min_p > 0.0f ? m + logf(p->min_p) / p->inv_temp : -FLT_MAX;
            floor = kth > floor ? kth : floor;
            out[r] = ids[draw(vals, ids, c, floor, p, table, span, w, buf)];
            continue;
        }
        float floor = -FLT_MAX;
        if (p->min_p > 0.0f) {
            float m = row_max(x, n_vocab);
            floor = m + logf(p->min_p) / p->inv_temp;
        }
        out[r] = draw(x, NULL, n_vocab, floor, p, table, span, w, buf);
    }
}

/* The model's log-probabilities: of the chosen token, and the n_top best (best first). */
void lg_logprobs(int32_t n_rows, int32_t n_vocab, const float *const *rows, const int32_t *tokens,
                 int32_t n_top, float *token_lp, int32_t *top_ids, float *top_lp, void *scratch) {
    int64_t n = n_vocab;
    float *vals = (float *)scratch + n, *work = vals + n;
    int32_t *cids = (int32_t *)(work + n + n / CB + 16);
    for (int32_t r = 0; r < n_rows; r++) {
        const float *x = rows[r];
        float m = row_max(x, n_vocab);
        float acc[LANES] = {0};
        int32_t i = 0;
        for (; i + LANES <= n_vocab; i += LANES)
            for (int j = 0; j < LANES; j++) acc[j] += fast_exp(x[i + j] - m);
        double s = 0.0;
        for (int j = 0; j < LANES; j++) s += acc[j];
        for (; i < n_vocab; i++) s += fast_exp(x[i] - m);
        float logz = m + (float)log(s);
        token_lp[r] = x[tokens[r]] - logz;
        if (n_top <= 0) continue;
        int32_t c = top_k_candidates(x, n_vocab, n_top, vals, cids, work);
        float kth = kth_of(vals, c, n_top < c ? n_top : c, work);
        int32_t *ids = top_ids + (size_t)r * n_top, got = 0;
        for (int32_t i = 0; i < c && got < n_top; i++) /* strictly better first */
            if (vals[i] > kth) ids[got++] = cids[i];
        for (int32_t i = 0; i < c && got < n_top; i++) /* then ties at the k-th, by id */
            if (vals[i] == kth) ids[got++] = cids[i];
        for (int32_t a = 1; a < got; a++) { /* insertion sort: best first, lower id on ties */
            int32_t id = ids[a], b = a - 1;
            while (b >= 0 && (x[ids[b]] < x[id] || (x[ids[b]] == x[id] && ids[b] > id))) {
                ids[b + 1] = ids[b];
                b--;
            }
            ids[b + 1] = id;
        }
        for (int32_t a = 0; a < got; a++) top_lp[(size_t)r * n_top + a] = x[ids[a]] - logz;
    }
}
