/* fetcher.c — per-file queues of claimed runs, served round robin by priority; a FIFO of stores. */
#include "fetcher.h"

#include "clock.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#define FILE_BUCKETS 256

typedef struct job {
    page_run run;
    int64_t queued_ns;           /* stores: when it joined the queue */
    struct job *next;
} job;

typedef struct job_list {
    job *head, *tail;
} job_list;

/* One file's queues; lives while it has queued or running runs. */
typedef struct file_queue {
    uint64_t source_id;
    job_list queued[FETCH_PRIORITIES];
    int running;
    struct file_queue *hash_next;
    struct file_queue *ring_next[FETCH_PRIORITIES];   /* circular, files with queued runs */
    bool in_ring[FETCH_PRIORITIES];
} file_queue;

struct fetcher {
    block_cache *cache;
    fetcher_config config;
    pthread_mutex_t lock;
    pthread_cond_t work;         /* a runnable run was queued, or stop */
    pthread_cond_t stored;       /* the store queue moved */
    file_queue *files[FILE_BUCKETS];
    file_queue *cursor[FETCH_PRIORITIES];   /* next file to serve, per priority */
    job_list stores;
    bool stopping;
    bool fetches_over;           /* every fetch thread has left: no store can come any more */
    bool quiet_unseen;           /* a run ended since fetching last went quiet */
    int idle;                    /* fetch threads waiting for work */
    pthread_t *threads;
    int thread_count;
    pthread_t *store_threads;
    int store_thread_count;
    fetcher_counters counters;
};

static void list_push(job_list *list, job *item)
{
    item->next = NULL;
    if (list->tail) list->tail->next = item;
    else list->head = item;
    list->tail = item;
}

static job *list_pop(job_list *list)
{
    job *item = list->head;
    if (item) {
        list->head = item->next;
        if (!list->head)
            list->tail = NULL;
    }
    return item;
}

static file_queue **file_slot(fetcher *pool, uint64_t source_id)
{
    file_queue **slot = &pool->files[source_id % FILE_BUCKETS];
    while (*slot && (*slot)->source_id != source_id)
        slot = &(*slot)->hash_next;
    return slot;
}

static void ring_insert(fetcher *pool, file_queue *fq, int priority)
{
    if (fq->in_ring[priority])
        return;
    fq->in_ring[priority] = true;
    file_queue *cursor = pool->cursor[priority];
    if (!cursor) {
        fq->ring_next[priority] = fq;
        pool->cursor[priority] = fq;
    } else {   /* just behind the cursor: served after every file already waiting */
        file_queue *last = cursor;
        while (last->ring_next[priority] != cursor)
            last = last->ring_next[priority];
        last->ring_next[priority] = fq;
        fq->ring_next[priority] = cursor;
    }
}

static void ring_remove(fetcher *pool, file_queue *fq, int priority)
{
    if (!fq->in_ring[priority])
        return;
    fq->in_ring[priority] = false;
    file_queue *prev = fq;
    while (prev->ring_next[priority] != fq)
        prev = prev->ring_next[priority];
    if (prev == fq) {
        pool->cursor[priority] = NULL;
    } else {
        prev->ring_next[priority] = fq->ring_next[priority];
        if (pool->cursor[priority] == fq)
            pool->cursor[priority] = fq->ring_next[priority];
    }
    fq->ring_next[priority] = NULL;
}

/* Frees a file's queue once it has nothing queued or running. The lock is held. */
static void release_if_idle(fetcher *pool, file_queue *fq)
{
    if (fq->running)
        return;
    for (int p = 0; p < FETCH_PRIORITIES; p++)
        if (fq->queued[p].head)
            return;
    file_queue **slot = file_slot(pool, fq->source_id);
    *slot = fq->hash_next;
    free(fq);
}

/* Counts a run into (change 1) or out of (change -1) the queue of a priority. The lock is held. */
static void count_queued(fetcher *pool, int priority, const page_run *run, int change)
{
    uint64_t bytes = block_run_length(run);
    pool->counters.queued[priority] += (uint64_t)(int64_t)change;
    pool->counters.queued_bytes[priority] += change > 0 ? bytes : -bytes;
}

/* The file that take_runnable would serve at priority p, or NULL. The lock is held. */
static file_queue *runnable_file(fetcher *pool, int p)
{
    file_queue *start = pool->cursor[p];
    if (!start)
        return NULL;
    file_queue *fq = start;
    do {
        if (fq->running < pool->config.per_file_cap)
            return fq;
        fq = fq->ring_next[p];
    } while (fq != start);
    return NULL;
}

static bool any_runnable(fetcher *pool)
{
    for (int p = 0; p < FETCH_PRIORITIES; p++)
        if (runnable_file(pool, p))
            return true;
    return false;
}

/* The next run to start, most urgent priority first, files round robin; NULL when none is
 * runnable. The lock is held. */
static job *take_runnable(fetcher *pool, file_queue **owner)
{
    for (int p = 0; p < FETCH_PRIORITIES; p++) {
        file_queue *fq = runnable_file(pool, p);
        if (!fq)
            continue;
        job *item = list_pop(&fq->queued[p]);
        pool->cursor[p] = fq->ring_next[p];
        if (!fq->queued[p].head)
            ring_remove(pool, fq, p);
        count_queued(pool, p, &item->run, -1);
        fq->running++;
        pool->counters.running++;
        *owner = fq;
        return item;
    }
    return NULL;
}

static void queue_store(fetcher *pool, const page_run *run)
{
    job *item = malloc(sizeof *item);
    block_cache_pin(pool->cache, run->blk);
    if (!item) {   /* no memory to queue it: store on this thread */
        pool->config.store(block_source_of(run->blk)->context, run);
        block_cache_put(pool->cache, run->blk);
        return;
    }
    item->run = *run;
    item->queued_ns = monotonic_ns();
    pthread_mutex_lock(&pool->lock);
    list_push(&pool->stores, item);
    pool->counters.stores_queued++;
    pthread_cond_signal(&pool->stored);
    pthread_mutex_unlock(&pool->lock);
}

/* Gives up the oldest stores not yet begun, at least bytes of them or all (their runs were
 * fetched; the disk just won't have them): their blocks may go. Returns the bytes given up. */
static uint64_t drop_queued_stores(fetcher *pool, uint64_t bytes)
{
    job *dropped = NULL, **tail = &dropped;
    uint64_t given_up = 0;
    pthread_mutex_lock(&pool->lock);
    while (given_up < bytes && pool->stores.head) {
        job *item = list_pop(&pool->stores);
        pool->counters.stores_queued--;
        pool->counters.stores_skipped_bytes += block_run_length(&item->run);
        given_up += block_run_length(&item->run);
        *tail = item;
        tail = &item->next;
    }
    *tail = NULL;
    pthread_mutex_unlock(&pool->lock);
    for (job *item = dropped, *next; item; item = next) {
        next = item->next;
        block_cache_put(pool->cache, item->run.blk);
        free(item);
    }
    return given_up;
}

/* Whether the disk keeps up with the network: no store has waited in the queue longer than the
 * lag allowed, and the memory cache is within its budget. Each run waiting there keeps its pages
 * in memory, out of read-ahead's reach and out of eviction's, so a disk far slower than the
 * network (a cloud volume of 125-250 MB/s behind a 10 Gbit/s link) would set the pace of every
 * cold read, and readers' claims, never refused, would take the memory past its budget (8 ranks
 * loading at once: 640-840 MiB of a 224 MiB budget). Runs fetched meanwhile are not stored, and
 * over the budget as many queued ones are given up as it is over, the run itself when they were
 * too few (counted); the next read of them fetches them again. */
static bool disk_keeps_up(fetcher *pool, const page_run *run)
{
    if (pool->config.store_lag_max_ns <= 0)
        return true;
    uint64_t over_budget = block_cache_bytes_over_budget(pool->cache);
    bool back_in_budget = over_budget == 0 || drop_queued_stores(pool, over_budget) >= over_budget;
    int64_t now = monotonic_ns();
    pthread_mutex_lock(&pool->lock);
    bool keeps_up = back_in_budget && (!pool->stores.head ||
                                       now - pool->stores.head->queued_ns <= pool->config.store_lag_max_ns);
    if (!keeps_up)
        pool->counters.stores_skipped_bytes += block_run_length(run);
    pthread_mutex_unlock(&pool->lock);
    return keeps_up;
}

static void run_job(fetcher *pool, job *item)
{
    bool from_network = false;
    int error = pool->config.load(block_source_of(item->run.blk)->context, &item->run, &from_network);
    bool store = !error && from_network && pool->config.store && disk_keeps_up(pool, &item->run);
    if (store)   /* pinned before completing: the pages must stay while they are written */
        queue_store(pool, &item->run);
    block_cache_complete(pool->cache, &item->run, error);
}

/* Waits for work; once no run is left, for at most QUIET_S, after which the block cache's
 * page pool shrinks to its idle size (it may hold the whole budget while blocks stream). */
#define QUIET_S 2
static void wait_for_work(fetcher *pool)
{
    pool->idle++;
    if (pool->counters.running > 0 || !pool->quiet_unseen) {
        pthread_cond_wait(&pool->work, &pool->lock);
        pool->idle--;
        return;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += QUIET_S;
    int waited = pthread_cond_timedwait(&pool->work, &pool->lock, &deadline);
    pool->idle--;
    if (waited != ETIMEDOUT || pool->counters.running > 0 || !pool->quiet_unseen)
        return;
    pool->quiet_unseen = false;
    pthread_mutex_unlock(&pool->lock);
    block_cache_trim_pool(pool->cache);
    pthread_mutex_lock(&pool->lock);
}

static void *fetch_thread_main(void *arg)
{
    fetcher *pool = arg;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        file_queue *fq = NULL;
        job *item = take_runnable(pool, &fq);
        if (!item) {
            if (pool->stopping)
                break;
            wait_for_work(pool);
            continue;
        }
        /* One waker per runnable run: a thread that finds more work than its own wakes one
         * other, which does the same. Waking every idle thread whenever a run ended (a file
         * may have fallen under its cap) cost a loader ~1 s of a 2-core machine in context
         * switches and lock hand-offs: 24 threads woke to find one run. */
        if (pool->idle > 0 && any_runnable(pool))
            pthread_cond_signal(&pool->work);
        pthread_mutex_unlock(&pool->lock);
        run_job(pool, item);
        free(item);
        pthread_mutex_lock(&pool->lock);
        fq->running--;
        pool->counters.running--;
        pool->quiet_unseen = true;
        release_if_idle(pool, fq);   /* this thread looks for work next: no one to wake */
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

static void *store_thread_main(void *arg)
{
    fetcher *pool = arg;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        job *item = list_pop(&pool->stores);
        if (!item) {
            if (pool->fetches_over)
                break;
            pthread_cond_wait(&pool->stored, &pool->lock);
            continue;
        }
        pool->counters.stores_queued--;
        pthread_mutex_unlock(&pool->lock);
        pool->config.store(block_source_of(item->run.blk)->context, &item->run);
        block_cache_put(pool->cache, item->run.blk);
        free(item);
        pthread_mutex_lock(&pool->lock);
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

void fetcher_submit(fetcher *pool, const page_run *run, fetch_priority priority)
{
    job *item = malloc(sizeof *item);
    if (!item) {
        block_cache_complete(pool->cache, run, ENOMEM);
        return;
    }
    item->run = *run;
    uint64_t source_id = block_source_of(run->blk)->id;
    pthread_mutex_lock(&pool->lock);
    file_queue **slot = file_slot(pool, source_id);
    if (!pool->stopping && !*slot && (*slot = calloc(1, sizeof **slot)) != NULL)
        (*slot)->source_id = source_id;
    file_queue *fq = pool->stopping ? NULL : *slot;
    if (fq) {
        list_push(&fq->queued[priority], item);
        ring_insert(pool, fq, priority);
        count_queued(pool, priority, run, 1);
        pthread_cond_signal(&pool->work);
    }
    pthread_mutex_unlock(&pool->lock);
    if (!fq) {
        block_cache_complete(pool->cache, run, pool->stopping ? ECANCELED : ENOMEM);
        free(item);
    }
}

static bool run_overlaps(const page_run *run, uint64_t block_size, uint64_t offset, uint64_t length)
{
    uint64_t begin = block_index(run->blk) * block_size + block_run_offset(run);
    uint64_t end = begin + block_run_length(run);
    return begin < offset + length && offset < end;
}

void fetcher_promote(fetcher *pool, uint64_t source_id, uint64_t offset, uint64_t length)
{
    uint64_t block_size = block_cache_block_size(pool->cache);
    pthread_mutex_lock(&pool->lock);
    file_queue *fq = *file_slot(pool, source_id);
    bool promoted = false;
    for (int p = FETCH_DEMAND + 1; fq && p < FETCH_PRIORITIES; p++) {
        job_list kept = {0};
        for (job *item; (item = list_pop(&fq->queued[p])) != NULL;) {
            bool urgent = run_overlaps(&item->run, block_size, offset, length);
            list_push(urgent ? &fq->queued[FETCH_DEMAND] : &kept, item);
            if (urgent) {
                count_queued(pool, p, &item->run, -1);
                count_queued(pool, FETCH_DEMAND, &item->run, 1);
                pool->counters.promoted++;
                promoted = true;
                ring_insert(pool, fq, FETCH_DEMAND);
            }
        }
        fq->queued[p] = kept;
        if (!kept.head)
            ring_remove(pool, fq, p);
    }
    /* A promoted run was runnable before (the cap is per file, not per priority): it only goes
     * first now. Waking every idle thread here, on each read that waits, made ~100,000 context
     * switches for one from_pretrained of 3 GB on 2 cores. */
    if (promoted && pool->idle > 0)
        pthread_cond_signal(&pool->work);
    pthread_mutex_unlock(&pool->lock);
}

void fetcher_get_counters(fetcher *pool, fetcher_counters *out)
{
    pthread_mutex_lock(&pool->lock);
    *out = pool->counters;
    pthread_mutex_unlock(&pool->lock);
}

/* Named threads: `top -H` and profiles tell fetching from storing. */
static bool start_threads(pthread_t **threads, int *count, int wanted, void *(*main_fn)(void *), void *arg,
                          const char *name)
{
    *threads = calloc((size_t)(wanted > 0 ? wanted : 1), sizeof **threads);
    if (!*threads)
        return false;
    for (; *count < wanted; (*count)++) {
        if (pthread_create(&(*threads)[*count], NULL, main_fn, arg) != 0)
            return false;
        (void)pthread_setname_np((*threads)[*count], name);
    }
    return true;
}

fetcher *fetcher_new(block_cache *cache, const fetcher_config *config)
{
    fetcher *pool = calloc(1, sizeof *pool);
    if (!pool)
        return NULL;
    pool->cache = cache;
    pool->config = *config;
    if (pool->config.per_file_cap < 1)
        pool->config.per_file_cap = 1;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->work, NULL);
    pthread_cond_init(&pool->stored, NULL);
    bool ok = start_threads(&pool->threads, &pool->thread_count, config->threads, fetch_thread_main, pool,
                            "hubfs-fetch");
    if (ok && config->store)
        ok = start_threads(&pool->store_threads, &pool->store_thread_count, config->store_threads,
                           store_thread_main, pool, "hubfs-store");
    if (!ok) {
        fetcher_free(pool);
        return NULL;
    }
    return pool;
}

/* Completes every queued run with ECANCELED. The lock is not held. */
static void cancel_queued(fetcher *pool)
{
    for (;;) {
        pthread_mutex_lock(&pool->lock);
        job *item = NULL;
        for (size_t b = 0; b < FILE_BUCKETS && !item; b++)
            for (file_queue *fq = pool->files[b]; fq && !item; fq = fq->hash_next)
                for (int p = 0; p < FETCH_PRIORITIES && !item; p++)
                    if ((item = list_pop(&fq->queued[p])) != NULL) {
                        count_queued(pool, p, &item->run, -1);
                        /* Out of the ring once empty, as take_runnable does: a running thread
                         * frees an idle queue when its run ends, and rings must not keep it. */
                        if (!fq->queued[p].head)
                            ring_remove(pool, fq, p);
                    }
        pthread_mutex_unlock(&pool->lock);
        if (!item)
            return;
        block_cache_complete(pool->cache, &item->run, ECANCELED);
        free(item);
    }
}

void fetcher_free(fetcher *pool)
{
    if (!pool)
        return;
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->work);
    pthread_mutex_unlock(&pool->lock);
    cancel_queued(pool);
    for (int i = 0; i < pool->thread_count; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_mutex_lock(&pool->lock);
    pool->fetches_over = true;
    pthread_cond_broadcast(&pool->stored);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->store_thread_count; i++)
        pthread_join(pool->store_threads[i], NULL);
    for (size_t b = 0; b < FILE_BUCKETS; b++)
        for (file_queue *fq = pool->files[b], *next; fq; fq = next) {
            next = fq->hash_next;
            free(fq);
        }
    free(pool->threads);
    free(pool->store_threads);
    pthread_cond_destroy(&pool->work);
    pthread_cond_destroy(&pool->stored);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}
