/* A small pool of worker threads for the sampling kernels (see _pool.c). */
#ifndef LG_POOL_H
#define LG_POOL_H

typedef struct lg_pool lg_pool;

/* A job: part `part` of `n_parts` (0 <= part < n_parts) of the work described by `arg`. */
typedef void (*lg_job)(void *arg, int part, int n_parts);

/* A pool that runs jobs on `n_threads` threads, the caller's included (n_threads - 1 workers);
 * NULL when no memory or thread could be had. */
lg_pool *lg_pool_new(int n_threads);

/* Runs job(arg, k, n_parts) for every k < n_parts, part 0 on the calling thread, the others on
 * the workers (n_parts is capped at the pool's threads); returns when every part is done. */
void lg_pool_run(lg_pool *pool, lg_job job, void *arg, int n_parts);

/* Stops the workers and frees the pool (NULL is allowed). */
void lg_pool_free(lg_pool *pool);

#endif
