/* The host-memory target: a malloc'd arena, reads land directly in it when contiguous, and
 * strided pieces are gathered out of a small pool of staging buffers. */
#include "target.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

typedef struct host_target {
    load_target base;
    uint8_t *arena;
    uint64_t arena_bytes;
    pthread_mutex_t lock;
    pthread_cond_t available;
    void **free_buffers;
    unsigned free_count, buffer_count;
    void **all_buffers;
} host_target;

/* The arena is one anonymous mapping, released whole when the rank is freed. */
static int host_alloc(load_target *t, uint64_t bytes, char *err, size_t errlen)
{
    host_target *h = (host_target *)t;
    size_t len = bytes ? (size_t)bytes : 1;
    void *arena = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (arena == MAP_FAILED)
        return fail(err, errlen, "cannot allocate %llu bytes of host memory for the rank",
                    (unsigned long long)bytes);
    h->arena = arena;
    h->arena_bytes = bytes;
    return 0;
}

static void *host_direct(load_target *t, uint64_t offset, uint64_t len)
{
    host_target *h = (host_target *)t;
    return offset + len <= h->arena_bytes ? h->arena + offset : NULL;
}

static void *host_acquire(load_target *t, char *err, size_t errlen)
{
    host_target *h = (host_target *)t;
    (void)err; (void)errlen;
    pthread_mutex_lock(&h->lock);
    while (h->free_count == 0) pthread_cond_wait(&h->available, &h->lock);
    void *buffer = h->free_buffers[--h->free_count];
    pthread_mutex_unlock(&h->lock);
    return buffer;
}

static void host_release(load_target *t, void *staging)
{
    host_target *h = (host_target *)t;
    pthread_mutex_lock(&h->lock);
    h->free_buffers[h->free_count++] = staging;
    pthread_cond_signal(&h->available);
    pthread_mutex_unlock(&h->lock);
}

static int host_write(load_target *t, void *staging, const copy_2d *c, char *err, size_t errlen)
{
    host_target *h = (host_target *)t;
    int rc = 0;
    if (c->dst_offset + (uint64_t)c->width * c->rows > h->arena_bytes) {
        rc = fail(err, errlen, "internal error: write beyond the arena");
    } else {
        const uint8_t *src = (const uint8_t *)staging + c->src_offset;
        uint8_t *dst = h->arena + c->dst_offset;
        for (size_t r = 0; r < c->rows; r++)
            memcpy(dst + r * c->width, src + r * c->src_pitch, c->width);
    }
    host_release(t, staging);
    return rc;
}

static int host_finish(load_target *t, char *err, size_t errlen)
{
    (void)t; (void)err; (void)errlen;
    return 0;
}

static int host_read_back(load_target *t, uint64_t offset, void *dst, size_t len, char *err,
                          size_t errlen)
{
    host_target *h = (host_target *)t;
    if (offset > h->arena_bytes || len > h->arena_bytes - offset)
        return fail(err, errlen, "read beyond the rank's %llu bytes",
                    (unsigned long long)h->arena_bytes);
    memcpy(dst, h->arena + offset, len);
    return 0;
}

static void *host_take_arena(load_target *t)
{
    host_target *h = (host_target *)t;
    void *arena = h->arena;
    h->arena = NULL;
    h->arena_bytes = 0;
    return arena;
}

static void host_free_arena(load_target *t, void *arena, uint64_t bytes)
{
    (void)t;
    if (arena) munmap(arena, bytes ? (size_t)bytes : 1);
}

static int host_copy_out(load_target *t, const void *src, void *dst, size_t len, char *err,
                         size_t errlen)
{
    (void)t; (void)err; (void)errlen;
    memcpy(dst, src, len);
    return 0;
}

static void host_destroy(load_target *t)
{
    host_target *h = (host_target *)t;
    if (!h) return;
    for (unsigned i = 0; i < h->buffer_count; i++) free(h->all_buffers[i]);
    free(h->all_buffers);
    free(h->free_buffers);
    host_free_arena(t, h->arena, h->arena_bytes);
    pthread_mutex_destroy(&h->lock);
    pthread_cond_destroy(&h->available);
    free(h);
}

load_target *target_host_create(size_t staging_bytes, unsigned staging_count, char *err,
                                size_t errlen)
{
    host_target *h = calloc(1, sizeof *h);
    if (!h) return fail(err, errlen, "out of memory"), NULL;
    h->base = (load_target){"cpu", staging_bytes, host_alloc, host_direct, host_acquire,
                            host_release, host_write, host_finish, NULL, host_read_back,
                            host_destroy, host_take_arena, host_free_arena, host_copy_out};
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->available, NULL);
    h->all_buffers = calloc(staging_count, sizeof *h->all_buffers);
    h->free_buffers = calloc(staging_count, sizeof *h->free_buffers);
    if (!h->all_buffers || !h->free_buffers) goto oom;
    for (; h->buffer_count < staging_count; h->buffer_count++) {
        void *b = malloc(staging_bytes);
        if (!b) goto oom;
        h->all_buffers[h->buffer_count] = b;
        h->free_buffers[h->free_count++] = b;
    }
    return &h->base;
oom:
    host_destroy(&h->base);
    fail(err, errlen, "out of memory for %u staging buffers of %zu bytes", staging_count,
         staging_bytes);
    return NULL;
}

#ifndef HUBFS_HAVE_CUDA
load_target *target_cuda_create(int device, size_t staging_bytes, unsigned staging_count,
                                char *err, size_t errlen)
{
    (void)staging_bytes; (void)staging_count;
    fail(err, errlen, "cuda:%d requested but this hubfs was built without CUDA (no CUDA "
         "toolkit at build time); use --device cpu", device);
    return NULL;
}

int target_cuda_visible_devices(void)
{
    return 0;
}
#endif
