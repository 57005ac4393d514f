/* fetcher.c — two FIFO work queues of blocks (fetch, store), each served by its own threads. */
#include "fetcher.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct work_item {
    void *payload;               /* a block, or a range_part */
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
    work_queue parts;            /* ranges of one block read concurrently; never wait on others */
};

/* Where the parts of one split read report. */
typedef struct split_read {
    pthread_mutex_t lock;
    pthread_cond_t done;
    unsigned remaining;
    int error;
} split_read;

typedef struct range_part {
    range_read_fn read;
    void *context;
    uint64_t offset;
    void *buf;
    size_t len;
    split_read *split;
} range_part;

static void queue_init(work_queue *queue)
{
    pthread_mutex_init(&queue->lock, NULL);
    pthread_cond_init(&queue->available, NULL);
}

/* Appends payload; false when the queue is shutting down (the caller keeps it). */
static bool queue_push(work_queue *queue, void *payload)
{
    work_item *item = malloc(sizeof *item);
    if (!item)
        return false;
    *item = (work_item){.payload = payload};
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

/* The next payload, or NULL when the thread must leave. */
static void *queue_pop(work_queue *queue)
{
    pthread_mutex_lock(&queue->lock);
    while (!queue->head && !queue->stopping)
        pthread_cond_wait(&queue->available, &queue->lock);
    void *payload = NULL;
    if (queue->head && !queue->abandon) {
        work_item *item = queue->head;
        queue->head = item->next;
        if (!queue->head)
            queue->tail = NULL;
        payload = item->payload;
        free(item);
    }
    pthread_mutex_unlock(&queue->lock);
    return payload;
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
        block_cache_load(pool->cache, blk);   /* may split its read over the part threads */
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

static void finish_part(range_part *part, int error)
{
    split_read *split = part->split;
    pthread_mutex_lock(&split->lock);
    if (error && !split->error)
        split->error = error;
    if (--split->remaining == 0)
        pthread_cond_signal(&split->done);
    pthread_mutex_unlock(&split->lock);
}

static void *part_thread_main(void *arg)
{
    fetcher *pool = arg;
    range_part *part;
    while ((part = queue_pop(&pool->parts)))
        finish_part(part, part->read(part->context, part->offset, part->buf, part->len));
    return NULL;
}

int fetcher_read_split(fetcher *pool, range_read_fn read, void *context, uint64_t offset, void *buf,
                       size_t len, size_t part_size)
{
    size_t count = part_size ? (len + part_size - 1) / part_size : 1;
    if (count <= 1 || count > FETCHER_MAX_PARTS)
        return read(context, offset, buf, len);
    range_part parts[FETCHER_MAX_PARTS];
    split_read split = {.remaining = (unsigned)count};
    pthread_mutex_init(&split.lock, NULL);
    pthread_cond_init(&split.done, NULL);
    for (size_t i = 0; i < count; i++) {
        size_t start = i * part_size;
        parts[i] = (range_part){.read = read, .context = context, .offset = offset + start,
                                .buf = (uint8_t *)buf + start, .len = len - start < part_size ? len - start : part_size,
                                .split = &split};
    }
    /* Part 0 runs here; a part the queue refuses (shutdown, no memory) runs here too. */
    for (size_t i = 1; i < count; i++)
        if (!queue_push(&pool->parts, &parts[i]))
            finish_part(&parts[i], read(context, parts[i].offset, parts[i].buf, parts[i].len));
    finish_part(&parts[0], read(context, parts[0].offset, parts[0].buf, parts[0].len));
    pthread_mutex_lock(&split.lock);
    while (split.remaining > 0)
        pthread_cond_wait(&split.done, &split.lock);
    int error = split.error;
    pthread_mutex_unlock(&split.lock);
    pthread_cond_destroy(&split.done);
    pthread_mutex_destroy(&split.lock);
    return error;
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
    queue_init(&pool->parts);
    bool ok = queue_start(&pool->parts, fetch_threads, part_thread_main, pool) &&
              queue_start(&pool->fetches, fetch_threads, fetch_thread_main, pool);
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
        block_cache_abandon(pool->cache, item->payload);
        free(item);
    }
    block_cache_set_store_hook(pool->cache, NULL, NULL);
    for (work_item *item = queue_stop(&pool->stores, false), *next; item; item = next) {
        next = item->next;
        store_and_release(pool, item->payload);
        free(item);
    }
    queue_stop(&pool->parts, false);   /* empty: every split read waits for its parts */
    free(pool);
}
