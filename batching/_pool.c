/* A small pool of worker threads for the sampling kernels.
 *
 * A step's rows used to be split between Python threads (concurrent.futures): every part cost
 * a future, a queue, a wake-up and several hand-offs of the GIL, about 60 us a thread on the
 * GPU host, so that 8 sampler threads were slower than 4. Here one ctypes call (which releases
 * the GIL) wakes the workers on a condition variable, runs part 0 itself and spins until the
 * others are done. Workers spin a little after each job before sleeping again, so the next
 * call of the same step (log-probabilities after sampling) finds them awake.
 *
 * One caller at a time: the engine thread owns its pool (batching/kernels.py holds a lock).
 * A forked child has no workers: there the caller runs every part itself.
 */
#include "_pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#define WORKER_SPINS 2000 /* checks for a new job before a worker sleeps (tens of us) */
#define PARTS_BITS 16     /* the low bits of `generation` carry the job's number of parts */
#define CALLER_SPINS 4000 /* checks for the workers' end before the caller yields its core */

typedef struct {
    lg_pool *pool;
    int index; /* 1..n_threads-1: the part a worker runs */
} worker_slot;

struct lg_pool {
    int n_threads;
    pthread_t *threads;
    worker_slot *slots;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    /* (job number << PARTS_BITS) | parts: a worker learns from one load whether it takes
     * part, and only those that do read `job` and `arg`, which stay put until they are done */
    atomic_uint_fast64_t generation;
    atomic_int pending; /* workers taking part that have not finished the current job */
    atomic_int stop;
    lg_job job;
    void *arg;
    pid_t owner; /* the process whose threads these are */
};

static int should_wait(lg_pool *pool, uint_fast64_t seen) {
    return atomic_load_explicit(&pool->generation, memory_order_acquire) == seen &&
           !atomic_load_explicit(&pool->stop, memory_order_acquire);
}

static void *worker(void *p) {
    worker_slot *slot = p;
    lg_pool *pool = slot->pool;
    uint_fast64_t seen = 0;
    for (;;) {
        for (int spins = 0; should_wait(pool, seen) && spins < WORKER_SPINS; spins++) cpu_relax();
        if (should_wait(pool, seen)) {
            pthread_mutex_lock(&pool->mutex);
            while (should_wait(pool, seen)) pthread_cond_wait(&pool->wake, &pool->mutex);
            pthread_mutex_unlock(&pool->mutex);
        }
        if (atomic_load_explicit(&pool->stop, memory_order_acquire)) return NULL;
        seen = atomic_load_explicit(&pool->generation, memory_order_acquire);
        int n_parts = (int)(seen & ((1u << PARTS_BITS) - 1));
        if (slot->index < n_parts) {
            pool->job(pool->arg, slot->index, n_parts);
            atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel);
        }
    }
}

lg_pool *lg_pool_new(int n_threads) {
    lg_pool *pool = calloc(1, sizeof *pool);
    if (pool == NULL) return NULL;
    n_threads = n_threads < 1 ? 1 : n_threads;
    pool->threads = calloc((size_t)n_threads, sizeof *pool->threads);
    pool->slots = calloc((size_t)n_threads, sizeof *pool->slots);
    if (pool->threads == NULL || pool->slots == NULL) {
        lg_pool_free(pool);
        return NULL;
    }
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pool->owner = getpid();
    pool->n_threads = 1;
    for (int i = 1; i < n_threads; i++) { /* fewer threads if the system refuses some */
        pool->slots[i].pool = pool;
        pool->slots[i].index = i;
        if (pthread_create(&pool->threads[i], NULL, worker, &pool->slots[i]) != 0) break;
        pool->n_threads = i + 1;
    }
    return pool;
}

void lg_pool_run(lg_pool *pool, lg_job job, void *arg, int n_parts) {
    if (pool == NULL || pool->n_threads == 1 || n_parts <= 1 || getpid() != pool->owner) {
        for (int k = 0; k < n_parts; k++) job(arg, k, n_parts);
        return;
    }
    n_parts = n_parts > pool->n_threads ? pool->n_threads : n_parts;
    pool->job = job;
    pool->arg = arg;
    atomic_store_explicit(&pool->pending, n_parts - 1, memory_order_relaxed);
    pthread_mutex_lock(&pool->mutex);
    uint_fast64_t next = atomic_load_explicit(&pool->generation, memory_order_relaxed);
    next = ((next >> PARTS_BITS) + 1) << PARTS_BITS | (uint_fast64_t)n_parts;
    atomic_store_explicit(&pool->generation, next, memory_order_release);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    job(arg, 0, n_parts);
    for (long spins = 0; atomic_load_explicit(&pool->pending, memory_order_acquire) > 0; spins++) {
        if (spins < CALLER_SPINS)
            cpu_relax();
        else
            sched_yield();
    }
}

void lg_pool_free(lg_pool *pool) {
    if (pool == NULL) return;
    if (pool->threads != NULL && pool->slots != NULL) {
        pthread_mutex_lock(&pool->mutex);
        atomic_store_explicit(&pool->stop, 1, memory_order_release);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->mutex);
        for (int i = 1; i < pool->n_threads; i++) pthread_join(pool->threads[i], NULL);
        pthread_cond_destroy(&pool->wake);
        pthread_mutex_destroy(&pool->mutex);
    }
    free(pool->threads);
    free(pool->slots);
    free(pool);
}
