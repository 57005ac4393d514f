/* fetcher.c — two FIFO work queues of blocks (fetch, store), each served by its own threads. */
#include "fetcher.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

typedef struct work_item {
    block *blk;
    struct work_item *next;
} work_item;

typedef struct work_queue {
    pthread_mutex_t lock;
    pthread_cond_t available;
    work_item *head, *tail;
    bool stopping;               /* no more items: threads leave once the queue is empty */
    bool abandon;                /* leave at once, dropping what is queued */
    int thread_count;
    pthread_t *threads;
} work_queue;

struct fetcher {
    block_cache *cache;
    block_store_fn store;
    work_queue fetches;
    work_queue stores;
};

static void queue_init(work_queue *queue)
{
    pthread_mutex_init(&queue->lock, NULL);
    pthread_cond_init(&queue->available, NULL);
}

/* Appends blk; false when the queue is shutting down (the caller keeps blk). */
static bool queue_push(work_queue *queue, block *blk)
{
    work_item *item = malloc(sizeof *item);
    if (!item)
        return false;
    *item = (work_item){.blk = blk};
    pthread_mutex_lock(&queue->lock);
    bool accepted = !queue->stopping;
    if (accepted) {
        if (queue->tail) queue->tail->next = item;
        else queue->head = item;
        queue->tail = item;
        pthread_cond_signal(&queue->available);
    }
    pthread_mutex_unlock(&queue->lock);
    if (!accepted)
        free(item);
    return accepted;
}

/* The next block, or NULL when the thread must leave. */
static block *queue_pop(work_queue *queue)
{
    pthread_mutex_lock(&queue->lock);
    while (!queue->head && !queue->stopping)
        pthread_cond_wait(&queue->available, &queue->lock);
    block *blk = NULL;
    if (queue->head && !queue->abandon) {
        work_item *item = queue->head;
        queue->head = item->next;
        if (!queue->head)
            queue->tail = NULL;
        blk = item->blk;
        free(item);
    }
    pthread_mutex_unlock(&queue->lock);
    return blk;
}

static bool queue_start(work_queue *queue, int count, void *(*main_fn)(void *), void *arg)
{
    queue->threads = calloc((size_t)(count > 0 ? count : 1), sizeof *queue->threads);
    if (!queue->threads)
        return false;
    for (; queue->thread_count < count; queue->thread_count++)
        if (pthread_create(&queue->threads[queue->thread_count], NULL, main_fn, arg) != 0)
            return false;
    return true;
}

/* Stops the threads; returns the blocks left queued (abandon) as a list for the caller. */
static work_item *queue_stop(work_queue *queue, bool abandon)
{
    pthread_mutex_lock(&queue->lock);
    queue->stopping = true;
    queue->abandon = abandon;
    pthread_cond_broadcast(&queue->available);
    pthread_mutex_unlock(&queue->lock);
    for (int i = 0; i < queue->thread_count; i++)
        pthread_join(queue->threads[i], NULL);
    work_item *left = queue->head;
    queue->head = queue->tail = NULL;
    free(queue->threads);
    pthread_cond_destroy(&queue->available);
    pthread_mutex_destroy(&queue->lock);
    return left;
}

static void store_and_release(fetcher *pool, block *blk)
{
    pool->store(block_source_of(blk)->context, block_index(blk), block_data(blk), block_length(blk));
    block_cache_release(pool->cache, blk);
}

static void *fetch_thread_main(void *arg)
{
    fetcher *pool = arg;
    block *blk;
    while ((blk = queue_pop(&pool->fetches)))
        block_cache_load(pool->cache, blk);
    return NULL;
}

static void *store_thread_main(void *arg)
{
    fetcher *pool = arg;
    block *blk;
    while ((blk = queue_pop(&pool->stores)))
        store_and_release(pool, blk);
    return NULL;
}

static void store_hook(void *context, block *blk)
{
    fetcher *pool = context;
    if (!queue_push(&pool->stores, blk))
        store_and_release(pool, blk);   /* shutting down: store on this thread */
}

fetcher *fetcher_new(block_cache *cache, int fetch_threads, block_store_fn store, int store_threads)
{
    fetcher *pool = calloc(1, sizeof *pool);
    if (!pool)
        return NULL;
    pool->cache = cache;
    pool->store = store;
    queue_init(&pool->fetches);
    queue_init(&pool->stores);
    bool ok = queue_start(&pool->fetches, fetch_threads, fetch_thread_main, pool);
    if (ok && store) {
        ok = queue_start(&pool->stores, store_threads, store_thread_main, pool);
        if (ok)
            block_cache_set_store_hook(cache, store_hook, pool);
    }
    if (!ok) {
        fetcher_free(pool);
        return NULL;
    }
    return pool;
}

void fetcher_submit(fetcher *pool, block *blk)
{
    if (!queue_push(&pool->fetches, blk))
        block_cache_abandon(pool->cache, blk);
}

void fetcher_free(fetcher *pool)
{
    if (!pool)
        return;
    for (work_item *item = queue_stop(&pool->fetches, true), *next; item; item = next) {
        next = item->next;
        block_cache_abandon(pool->cache, item->blk);
        free(item);
    }
    block_cache_set_store_hook(pool->cache, NULL, NULL);
    for (work_item *item = queue_stop(&pool->stores, false), *next; item; item = next) {
        next = item->next;
        store_and_release(pool, item->blk);
        free(item);
    }
    free(pool);
}
