/* The CUDA target: one cudaMalloc arena per rank, a ring of pinned staging buffers that
 * reader threads fill, and several streams so that reading buffer k+1 overlaps copying
 * buffer k. Events tell when a buffer's copy has landed and it may be refilled. Memory on
 * both sides is bounded by the ring, never by the largest tensor or file. */
#include "target.h"
#include "util.h"

#include <cuda_runtime.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CUDA_STREAMS 4

typedef enum buffer_state { BUFFER_FREE, BUFFER_HELD, BUFFER_COPYING } buffer_state;

typedef struct cuda_buffer {
    void *host;
    cudaEvent_t copied;
    buffer_state state;
    uint64_t sequence; /* order of submission, to wait on the oldest copy first */
} cuda_buffer;

typedef struct cuda_target {
    load_target base;
    char device_name[24];
    int device;
    uint8_t *arena;
    uint64_t arena_bytes;
    cudaStream_t streams[CUDA_STREAMS];
    unsigned stream_count, next_stream;
    cuda_buffer *buffers;
    unsigned buffer_count;
    uint64_t next_sequence;
    pthread_mutex_t lock;
    pthread_cond_t changed;
} cuda_target;

static int cuda_fail(char *err, size_t errlen, const char *what, cudaError_t rc)
{
    return fail(err, errlen, "%s failed: %s (%s)", what, cudaGetErrorString(rc), cudaGetErrorName(rc));
}

static int cuda_alloc(load_target *t, uint64_t bytes, char *err, size_t errlen)
{
    cuda_target *c = (cuda_target *)t;
    cudaSetDevice(c->device);
    cudaError_t rc = cudaMalloc((void **)&c->arena, bytes ? (size_t)bytes : 1);
    if (rc != cudaSuccess) {
        c->arena = NULL;
        return fail(err, errlen, "cannot allocate %llu bytes on %s: %s",
                    (unsigned long long)bytes, c->device_name, cudaGetErrorString(rc));
    }
    c->arena_bytes = bytes;
    return 0;
}

static void *cuda_direct(load_target *t, uint64_t offset, uint64_t len)
{
    (void)t; (void)offset; (void)len;
    return NULL; /* device memory: always through the pinned ring */
}

/* A free buffer, or the one whose copy was submitted first once that copy is done. */
static void *cuda_acquire(load_target *t, char *err, size_t errlen)
{
    cuda_target *c = (cuda_target *)t;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        cuda_buffer *oldest = NULL;
        for (unsigned i = 0; i < c->buffer_count; i++) {
            cuda_buffer *b = &c->buffers[i];
            if (b->state == BUFFER_FREE) {
                b->state = BUFFER_HELD;
                pthread_mutex_unlock(&c->lock);
                return b->host;
            }
            if (b->state == BUFFER_COPYING && (!oldest || b->sequence < oldest->sequence))
                oldest = b;
        }
        if (oldest) {
            oldest->state = BUFFER_HELD;
            pthread_mutex_unlock(&c->lock);
            cudaError_t rc = cudaEventSynchronize(oldest->copied);
            if (rc != cudaSuccess) {
                cuda_fail(err, errlen, "waiting for a host-to-device copy", rc);
                t->staging_release(t, oldest->host);
                return NULL;
            }
            return oldest->host;
        }
        pthread_cond_wait(&c->changed, &c->lock);
    }
}

static cuda_buffer *buffer_of(cuda_target *c, void *host)
{
    for (unsigned i = 0; i < c->buffer_count; i++)
        if (c->buffers[i].host == host) return &c->buffers[i];
    return NULL;
}

static void cuda_release(load_target *t, void *staging)
{
    cuda_target *c = (cuda_target *)t;
    pthread_mutex_lock(&c->lock);
    buffer_of(c, staging)->state = BUFFER_FREE;
    pthread_cond_signal(&c->changed);
    pthread_mutex_unlock(&c->lock);
}

static int cuda_write(load_target *t, void *staging, const copy_2d *copy, char *err, size_t errlen)
{
    cuda_target *c = (cuda_target *)t;
    cuda_buffer *b = buffer_of(c, staging);
    if (copy->dst_offset + (uint64_t)copy->width * copy->rows > c->arena_bytes) {
        cuda_release(t, staging);
        return fail(err, errlen, "internal error: write beyond the arena");
    }
    cudaSetDevice(c->device);
    pthread_mutex_lock(&c->lock);
    cudaStream_t stream = c->streams[c->next_stream++ % c->stream_count];
    pthread_mutex_unlock(&c->lock);
    const uint8_t *src = (const uint8_t *)staging + copy->src_offset;
    uint8_t *dst = c->arena + copy->dst_offset;
    cudaError_t rc = copy->rows == 1
        ? cudaMemcpyAsync(dst, src, copy->width, cudaMemcpyHostToDevice, stream)
        : cudaMemcpy2DAsync(dst, copy->width, src, copy->src_pitch, copy->width, copy->rows,
                            cudaMemcpyHostToDevice, stream);
    if (rc == cudaSuccess) rc = cudaEventRecord(b->copied, stream);
    if (rc != cudaSuccess) {
        cudaStreamSynchronize(stream); /* the buffer may be in use by an enqueued copy */
        cuda_release(t, staging);
        return cuda_fail(err, errlen, "cudaMemcpyAsync to the device", rc);
    }
    pthread_mutex_lock(&c->lock);
    b->state = BUFFER_COPYING;
    b->sequence = c->next_sequence++;
    pthread_cond_signal(&c->changed);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

static int cuda_finish(load_target *t, char *err, size_t errlen)
{
    cuda_target *c = (cuda_target *)t;
    cudaSetDevice(c->device);
    for (unsigned i = 0; i < c->stream_count; i++) {
        cudaError_t rc = cudaStreamSynchronize(c->streams[i]);
        if (rc != cudaSuccess) return cuda_fail(err, errlen, "cudaStreamSynchronize", rc);
    }
    return 0;
}

static int cuda_read_back(load_target *t, uint64_t offset, void *dst, size_t len, char *err,
                          size_t errlen)
{
    cuda_target *c = (cuda_target *)t;
    if (offset > c->arena_bytes || len > c->arena_bytes - offset)
        return fail(err, errlen, "read beyond the rank's %llu bytes",
                    (unsigned long long)c->arena_bytes);
    cudaSetDevice(c->device);
    cudaError_t rc = cudaMemcpy(dst, c->arena + offset, len, cudaMemcpyDeviceToHost);
    return rc == cudaSuccess ? 0 : cuda_fail(err, errlen, "cudaMemcpy from the device", rc);
}

static void cuda_destroy(load_target *t)
{
    cuda_target *c = (cuda_target *)t;
    if (!c) return;
    cudaSetDevice(c->device);
    for (unsigned i = 0; i < c->stream_count; i++) {
        cudaStreamSynchronize(c->streams[i]);
        cudaStreamDestroy(c->streams[i]);
    }
    for (unsigned i = 0; i < c->buffer_count; i++) {
        cudaFreeHost(c->buffers[i].host);
        cudaEventDestroy(c->buffers[i].copied);
    }
    free(c->buffers);
    if (c->arena) cudaFree(c->arena);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->changed);
    free(c);
}

static int cuda_setup(cuda_target *c, size_t staging_bytes, unsigned staging_count, char *err,
                      size_t errlen)
{
    cudaError_t rc = cudaSetDevice(c->device);
    if (rc != cudaSuccess) return cuda_fail(err, errlen, "cudaSetDevice", rc);
    for (; c->stream_count < CUDA_STREAMS; c->stream_count++) {
        rc = cudaStreamCreateWithFlags(&c->streams[c->stream_count], cudaStreamNonBlocking);
        if (rc != cudaSuccess) return cuda_fail(err, errlen, "cudaStreamCreate", rc);
    }
    c->buffers = calloc(staging_count, sizeof *c->buffers);
    if (!c->buffers) return fail(err, errlen, "out of memory");
    /* Pinning is slow (hundreds of ms per GB): the ring is allocated once, per load. */
    for (; c->buffer_count < staging_count; c->buffer_count++) {
        cuda_buffer *b = &c->buffers[c->buffer_count];
        rc = cudaHostAlloc(&b->host, staging_bytes, cudaHostAllocDefault);
        if (rc != cudaSuccess) return cuda_fail(err, errlen, "cudaHostAlloc of a staging buffer", rc);
        rc = cudaEventCreateWithFlags(&b->copied, cudaEventDisableTiming);
        if (rc != cudaSuccess) {
            cudaFreeHost(b->host);
            return cuda_fail(err, errlen, "cudaEventCreate", rc);
        }
    }
    return 0;
}

load_target *target_cuda_create(int device, size_t staging_bytes, unsigned staging_count,
                                char *err, size_t errlen)
{
    int devices = 0;
    cudaError_t rc = cudaGetDeviceCount(&devices);
    if (rc != cudaSuccess || devices == 0) {
        fail(err, errlen, "no CUDA device available for cuda:%d (%s); use --device cpu", device,
             rc != cudaSuccess ? cudaGetErrorString(rc) : "the driver reports 0 devices");
        return NULL;
    }
    if (device < 0 || device >= devices) {
        fail(err, errlen, "cuda:%d does not exist: this machine has %d CUDA device%s (cuda:0..%d)",
             device, devices, devices == 1 ? "" : "s", devices - 1);
        return NULL;
    }
    cuda_target *c = calloc(1, sizeof *c);
    if (!c) return fail(err, errlen, "out of memory"), NULL;
    c->device = device;
    snprintf(c->device_name, sizeof c->device_name, "cuda:%d", device);
    c->base = (load_target){c->device_name, staging_bytes, cuda_alloc, cuda_direct, cuda_acquire,
                            cuda_release, cuda_write, cuda_finish, cuda_read_back, cuda_destroy};
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->changed, NULL);
    if (cuda_setup(c, staging_bytes, staging_count, err, errlen) != 0) {
        cuda_destroy(&c->base);
        return NULL;
    }
    return &c->base;
}
