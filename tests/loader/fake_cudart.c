/* fake_cudart.c — a CPU stand-in for the CUDA runtime calls of loader/target_cuda.c, so that
 * the CUDA target's ring of staging buffers, its events and its 2-D copies run (also under
 * ASan/TSan) on machines without a GPU. Linked into the test executable, these definitions
 * take precedence over libcudart's.
 *
 * Copies are asynchronous like the real ones: each stream has a worker thread that performs
 * its queued copies in order, each after a short delay. A staging buffer recycled before its
 * copy ran therefore corrupts the result (the tests compare every byte), and one freed early
 * is a use-after-free for ASan. "Device" memory is host memory. */
#include <cuda_runtime.h>

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct fake_copy {
    struct fake_copy *next;
    uint8_t *dst;
    const uint8_t *src;
    size_t dpitch, spitch, width, height;
} fake_copy;

struct CUstream_st {
    pthread_t worker;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    fake_copy *head, *tail;
    uint64_t submitted, completed;
    bool stopping;
};

struct CUevent_st {
    struct CUstream_st *stream; /* NULL until recorded */
    uint64_t target;            /* done once the stream completed this many copies */
};

static void short_delay(void)
{
    struct timespec pause = {0, 100 * 1000};
    nanosleep(&pause, NULL);
}

static void *stream_worker(void *arg)
{
    struct CUstream_st *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->head && !s->stopping) pthread_cond_wait(&s->changed, &s->lock);
        fake_copy *c = s->head;
        if (!c) break;
        s->head = c->next;
        if (!s->head) s->tail = NULL;
        pthread_mutex_unlock(&s->lock);
        short_delay();
        for (size_t row = 0; row < c->height; row++)
            memcpy(c->dst + row * c->dpitch, c->src + row * c->spitch, c->width);
        free(c);
        pthread_mutex_lock(&s->lock);
        s->completed++;
        pthread_cond_broadcast(&s->changed);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static int device_count(void)
{
    const char *v = getenv("HUBFS_FAKE_CUDA_DEVICES");
    return v ? atoi(v) : 1;
}

cudaError_t cudaGetDeviceCount(int *count)
{
    *count = device_count();
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device)
{
    return device >= 0 && device < device_count() ? cudaSuccess : cudaErrorInvalidDevice;
}

const char *cudaGetErrorString(cudaError_t error)
{
    return error == cudaSuccess ? "no error" : "fake CUDA error";
}

const char *cudaGetErrorName(cudaError_t error)
{
    return error == cudaSuccess ? "cudaSuccess" : "cudaErrorFake";
}

/* HUBFS_FAKE_CUDA_MEMORY: the device's size in bytes, to test allocation failures. */
cudaError_t cudaMalloc(void **ptr, size_t size)
{
    const char *limit = getenv("HUBFS_FAKE_CUDA_MEMORY");
    if (limit && size > strtoull(limit, NULL, 10)) return cudaErrorMemoryAllocation;
    *ptr = malloc(size);
    return *ptr ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFree(void *ptr)
{
    free(ptr);
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **ptr, size_t size, unsigned int flags)
{
    (void)flags;
    *ptr = malloc(size);
    return *ptr ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaFreeHost(void *ptr)
{
    free(ptr);
    return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags)
{
    (void)flags;
    struct CUstream_st *s = calloc(1, sizeof *s);
    if (!s) return cudaErrorMemoryAllocation;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->changed, NULL);
    if (pthread_create(&s->worker, NULL, stream_worker, s) != 0) {
        free(s);
        return cudaErrorMemoryAllocation;
    }
    *stream = s;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    pthread_mutex_lock(&s->lock);
    while (s->completed < s->submitted) pthread_cond_wait(&s->changed, &s->lock);
    pthread_mutex_unlock(&s->lock);
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->worker, NULL);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->changed);
    free(s);
    return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags)
{
    (void)flags;
    *event = calloc(1, sizeof **event);
    return *event ? cudaSuccess : cudaErrorMemoryAllocation;
}

cudaError_t cudaEventDestroy(cudaEvent_t event)
{
    free(event);
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t s)
{
    pthread_mutex_lock(&s->lock);
    event->stream = s;
    event->target = s->submitted;
    pthread_mutex_unlock(&s->lock);
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event)
{
    struct CUstream_st *s = event->stream;
    if (!s) return cudaSuccess;
    pthread_mutex_lock(&s->lock);
    while (s->completed < event->target) pthread_cond_wait(&s->changed, &s->lock);
    pthread_mutex_unlock(&s->lock);
    return cudaSuccess;
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width,
                              size_t height, enum cudaMemcpyKind kind, cudaStream_t s)
{
    if (kind != cudaMemcpyHostToDevice || width > dpitch || width > spitch || !s)
        return cudaErrorInvalidValue;
    fake_copy *c = malloc(sizeof *c);
    if (!c) return cudaErrorMemoryAllocation;
    *c = (fake_copy){NULL, dst, src, dpitch, spitch, width, height};
    pthread_mutex_lock(&s->lock);
    if (s->tail) s->tail->next = c;
    else s->head = c;
    s->tail = c;
    s->submitted++;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t s)
{
    return cudaMemcpy2DAsync(dst, count, src, count, count, 1, kind, s);
}

/* Synchronous, and like a real copy on the legacy stream it does not wait for the loader's
 * non-blocking streams: the target must have finished them itself. */
cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind)
{
    if (kind != cudaMemcpyDeviceToHost) return cudaErrorInvalidValue;
    memcpy(dst, src, count);
    return cudaSuccess;
}
