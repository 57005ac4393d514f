/* read_path_support.h — what the block cache and fetcher tests share: the bytes a fake remote
 * file holds, loading a claimed run with them, and a waiter a test thread can sleep on with a
 * deadline (a broken scheduler must fail a check, never hang the suite). */
#ifndef HUBFS_TEST_READ_PATH_SUPPORT_H
#define HUBFS_TEST_READ_PATH_SUPPORT_H

#include "blocks.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* The byte at offset of file id: depends on both, and differs from page to page and block to
 * block, so bytes of the wrong file, block or page show. */
static inline uint8_t pattern_byte(uint64_t id, uint64_t offset)
{
    uint64_t x = (offset + 1) * 0x9E3779B97F4A7C15ULL ^ (id + 1) * 0xC2B2AE3D27D4EB4FULL;
    return (uint8_t)(x >> 56 ^ x >> 23);
}

static inline uint64_t run_file_offset(const page_run *run, uint32_t block_size)
{
    return block_index(run->blk) * (uint64_t)block_size + block_run_offset(run);
}

/* What a loader does: writes the file's bytes into the run's buffer. */
static inline void fill_run(const page_run *run, uint32_t block_size)
{
    uint8_t *buffer = block_run_buffer(run);
    uint64_t id = block_source_of(run->blk)->id, base = run_file_offset(run, block_size);
    for (size_t i = 0; i < block_run_length(run); i++)
        buffer[i] = pattern_byte(id, base + i);
}

/* Whether bytes [from, to) of a block hold the file's bytes. */
static inline bool bytes_right(const uint8_t *bytes, uint64_t id, uint64_t file_offset, size_t length)
{
    for (size_t i = 0; i < length; i++)
        if (bytes[i] != pattern_byte(id, file_offset + i))
            return false;
    return true;
}

static inline bool block_bytes_right(const block *blk, uint32_t block_size, size_t from, size_t to)
{
    return bytes_right(block_data(blk) + from, block_source_of(blk)->id,
                       block_index(blk) * (uint64_t)block_size + from, to - from);
}

/* A block waiter that counts its calls and can be slept on. */
typedef struct latch_waiter {
    block_waiter waiter;         /* first: on_ready gets &waiter */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int fired;                   /* calls of on_ready */
    int error;                   /* what the last call said */
} latch_waiter;

static inline void latch_on_ready(block_waiter *waiter, int error)
{
    latch_waiter *latch = (latch_waiter *)waiter;
    pthread_mutex_lock(&latch->lock);
    latch->fired++;
    latch->error = error;
    pthread_cond_broadcast(&latch->cond);
    pthread_mutex_unlock(&latch->lock);
}

static inline void latch_init(latch_waiter *latch)
{
    *latch = (latch_waiter){.waiter.on_ready = latch_on_ready, .error = -1};
    pthread_mutex_init(&latch->lock, NULL);
    pthread_cond_init(&latch->cond, NULL);
}

static inline void latch_destroy(latch_waiter *latch)
{
    pthread_cond_destroy(&latch->cond);
    pthread_mutex_destroy(&latch->lock);
}

static inline int latch_fired(latch_waiter *latch)
{
    pthread_mutex_lock(&latch->lock);
    int fired = latch->fired;
    pthread_mutex_unlock(&latch->lock);
    return fired;
}

static inline struct timespec deadline_after(double seconds)
{
    struct timespec at;
    clock_gettime(CLOCK_REALTIME, &at);
    long long ns = at.tv_nsec + (long long)(seconds * 1e9);
    at.tv_sec += (time_t)(ns / 1000000000);
    at.tv_nsec = (long)(ns % 1000000000);
    return at;
}

/* Waits until the waiter fired or seconds passed; whether it fired. */
static inline bool latch_wait(latch_waiter *latch, double seconds)
{
    struct timespec until = deadline_after(seconds);
    pthread_mutex_lock(&latch->lock);
    int rc = 0;
    while (latch->fired == 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&latch->cond, &latch->lock, &until);
    bool fired = latch->fired > 0;
    pthread_mutex_unlock(&latch->lock);
    return fired;
}

#endif
