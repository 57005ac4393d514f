/* The CUDA target: one cudaMalloc arena per rank, a ring of pinned staging buffers that
 * reader threads fill, and several streams so that reading buffer k+1 overlaps copying
 * buffer k. Events tell when a buffer's copy has landed and it may be refilled; readers that
 * wait for one sleep (cudaEventBlockingSync) instead of spinning on cores that the reads — on
 * a lazy mount, the FUSE daemon — need. Memory is bounded on both sides: the arena by the
 * rank's bytes, the ring by TARGET_CUDA_STAGING_MAX_BYTES.
 *
 * The current device is per thread and starts at 0, and a thread's first call that needs a
 * context creates one (~0.5 GiB) on its current device: a reader whose first call waited on
 * an event would put a stray context on GPU 0. So every entry point that calls CUDA first
 * makes the target's device current (device_scope), and on the way out puts back the context
 * the thread had, so that a framework sharing the thread keeps its device. A thread that had
 * no context keeps the target's: putting back "device 0" would take cudaSetDevice(0), which
 * creates a context there (CUDA 12 and later). */
#include "target.h"
#include "util.h"

#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>
#include <pthread.h>
#include <stdbool.h>
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
    uint64_t bytes;    /* of the copy in flight: landed once its event has completed */
} cuda_buffer;

typedef struct cuda_target {
    load_target base;
    char device_name[24];
    int device;
    PFN_cuCtxGetCurrent_v4000 get_context;
    PFN_cuCtxSetCurrent_v4000 set_context;
    uint8_t *arena;
    uint64_t arena_bytes;
    cudaStream_t streams[CUDA_STREAMS];
    unsigned stream_count, next_stream;
    cuda_buffer *buffers;
    unsigned buffer_count;
    uint64_t next_sequence, landed_bytes;
    pthread_mutex_t lock;
    pthread_cond_t changed;
} cuda_target;

typedef struct device_scope {
    CUcontext saved; /* the calling thread's context on entry, NULL if it had none */
    bool switched;
} device_scope;

static int cuda_fail(char *err, size_t errlen, const char *what, cudaError_t rc)
{
    return fail(err, errlen, "%s failed: %s (%s)", what, cudaGetErrorString(rc), cudaGetErrorName(rc));
}

/* A driver function through the runtime, so that hubfs does not link libcuda itself (and
 * still starts where no driver is installed). NULL when the driver lacks it. */
static void *driver_function(const char *symbol)
{
    void *fn = NULL;
#if CUDART_VERSION >= 12050
    enum cudaDriverEntryPointQueryResult found;
    if (cudaGetDriverEntryPointByVersion(symbol, &fn, 12000, cudaEnableDefault, &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess)
        return NULL;
#elif CUDART_VERSION >= 12000
    enum cudaDriverEntryPointQueryResult found;
    if (cudaGetDriverEntryPoint(symbol, &fn, cudaEnableDefault, &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess)
        return NULL;
#else
    if (cudaGetDriverEntryPoint(symbol, &fn, cudaEnableDefault) != cudaSuccess) return NULL;
#endif
    return fn;
}

/* Makes the target's device current for the calling thread, remembering what to put back. */
static int enter_device(const cuda_target *c, device_scope *scope, char *err, size_t errlen)
{
    scope->switched = false;
    if (c->get_context(&scope->saved) != CUDA_SUCCESS) scope->saved = NULL;
    int current = -1;
    if (scope->saved && cudaGetDevice(&current) == cudaSuccess && current == c->device) return 0;
    cudaError_t rc = cudaSetDevice(c->device);
    if (rc != cudaSuccess)
        return fail(err, errlen, "cannot make %s the current device: %s (%s)", c->device_name,
                    cudaGetErrorString(rc), cudaGetErrorName(rc));
    scope->switched = true;
    return 0;
}

static void leave_device(const cuda_target *c, const device_scope *scope)
{
    if (scope->switched && scope->saved) c->set_context(scope->saved);
}

static int cuda_alloc(load_target *t, uint64_t bytes, char *err, size_t errlen)
{
    cuda_target *c = (cuda_target *)t;
    device_scope scope;
    if (enter_device(c, &scope, err, errlen) != 0) return -1;
    cudaError_t rc = cudaMalloc((void **)&c->arena, bytes ? (size_t)bytes : 1);
    leave_device(c, &scope);
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

static cuda_buffer *buffer_of(cuda_target *c, void *host)
{
    for (unsigned i = 0; i < c->buffer_count; i++)
        if (c->buffers[i].host == host) return &c->buffers[i];
    return NULL;
}

/* Frees the buffers whose copies have completed (lock held; the device current). */
static void collect_landed(cuda_target *c)
{
    for (unsigned i = 0; i < c->buffer_count; i++) {
        cuda_buffer *b = &c->buffers[i];
        if (b->state == BUFFER_COPYING && cudaEventQuery(b->copied) == cudaSuccess) {
            c->landed_bytes += b->bytes;
            b->bytes = 0;
            b->state = BUFFER_FREE;
        }
    }
}

static cuda_buffer *find_buffer(cuda_target *c, buffer_state state)
{
    cuda_buffer *found = NULL;
    for (unsigned i = 0; i < c->buffer_count; i++) {
        cuda_buffer *b = &c->buffers[i];
        if (b->state == state && (!found || b->sequence < found->sequence)) found = b;
    }
    return found;
}

/* Waits for the copy out of `b` (lock held on entry and exit; the device current). The
 * caller holds the buffer meanwhile; on success its bytes have landed, on failure it is free
 * again. */
static int wait_for_copy(cuda_target *c, cuda_buffer *b, char *err, size_t errlen)
{
    b->state = BUFFER_HELD;
    pthread_mutex_unlock(&c->lock);
    cudaError_t rc = cudaEventSynchronize(b->copied);
    pthread_mutex_lock(&c->lock);
    if (rc == cudaSuccess) c->landed_bytes += b->bytes;
    b->bytes = 0;
    if (rc == cudaSuccess) return 0;
    b->state = BUFFER_FREE;
    pthread_cond_signal(&c->changed);
    char what[64];
    snprintf(what, sizeof what, "a host-to-device copy to %s", c->device_name);
    return cuda_fail(err, errlen, what, rc);
}

/* A free buffer, else one whose copy has landed, else the oldest copying one once its copy
 * lands; a buffer held by another reader is waited for. */
static void *acquire_buffer(cuda_target *c, char *err, size_t errlen)
{
    cuda_buffer *b;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        b = find_buffer(c, BUFFER_FREE);
        if (!b) {
            collect_landed(c);
            b = find_buffer(c, BUFFER_FREE);
        }
        if (b) {
            b->state = BUFFER_HELD;
            break;
        }
        if ((b = find_buffer(c, BUFFER_COPYING))) {
            if (wait_for_copy(c, b, err, errlen) != 0) b = NULL;
            break;
        }
        pthread_cond_wait(&c->changed, &c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return b ? b->host : NULL;
}

static void *cuda_acquire(load_target *t, char *err, size_t errlen)
{
    cuda_target *c = (cuda_target *)t;
    device_scope scope;
    if (enter_device(c, &scope, err, errlen) != 0) return NULL;
    void *host = acquire_buffer(c, err, errlen);
    leave_device(c, &scope);
    return host;
}

/* No CUDA call: no device to set. */
static void cuda_release(load_target *t, void *staging)
{
    cuda_target *c = (cuda_target *)t;
    pthread_mutex_lock(&c->lock);
    cuda_buffer *b = buffer_of(c, staging);
    b->state = BUFFER_FREE;
    b->bytes = 0;
    pthread_cond_signal(&c->changed);
    pthread_mutex_unlock(&c->lock);
}

/* Row pieces (a row-parallel slice) go as one 2-D copy straight from the rows read whole: on an
 * H200 the copy engine takes them at under 2 ns per row, 34-42 GB/s for 64-byte pieces and
 * 48-55 GB/s from 512 bytes, while moving them together on a CPU first ran at 0.5 to 11 GB/s
 * per thread (gpu_check.sh's "2-D copy" figures), time the reader threads owe to reading. */
static cudaError_t enqueue_copy(const uint8_t *staging, const copy_2d *copy, uint8_t *dst,
                                cudaStream_t stream)
{
    const uint8_t *src = staging + copy->src_offset;
    if (copy->rows == 1 || copy->src_pitch == copy->width)
        return cudaMemcpyAsync(dst, src, copy->width * copy->rows, cudaMemcpyHostToDevice, stream);
    return cudaMemcpy2DAsync(dst, copy->width, src, copy->src_pitch, copy->width, copy->rows,
                             cudaMemcpyHostToDevice, stream);
}

static int submit_copy(cuda_target *c, cuda_buffer *b, const copy_2d *copy, char *err,
                       size_t errlen)
{
    pthread_mutex_lock(&c->lock);
    cudaStream_t stream = c->streams[c->next_stream++ % c->stream_count];
    pthread_mutex_unlock(&c->lock);
    cudaError_t rc = enqueue_copy(b->host, copy, c->arena + copy->dst_offset, stream);
    if (rc == cudaSuccess) rc = cudaEventRecord(b->copied, stream);
    if (rc != cudaSuccess) {
        cudaStreamSynchronize(stream); /* the buffer may be in use by an enqueued copy */
        cuda_release(&c->base, b->host);
        char what[64];
        snprintf(what, sizeof what, "queueing a host-to-device copy to %s", c->device_name);
        return cuda_fail(err, errlen, what, rc);
    }
    pthread_mutex_lock(&c->lock);
    b->state = BUFFER_COPYING;
    b->bytes = (uint64_t)copy->width * copy->rows;
    b->sequence = c->next_sequence++;
    pthread_cond_signal(&c->changed);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

static int cuda_write(load_target *t, void *staging, const copy_2d *copy, char *err, size_t errlen)
{
    cuda_target *c = (cuda_target *)t;
    device_scope scope;
    if (copy->dst_offset + (uint64_t)copy->width * copy->rows > c->arena_bytes) {
        cuda_release(t, staging);
        return fail(err, errlen, "internal error: write beyond the arena");
    }
    if (enter_device(c, &scope, err, errlen) != 0) {
        cuda_release(t, staging);
        return -1;
    }
    int rc = submit_copy(c, buffer_of(c, staging), copy, err, errlen);
    leave_device(c, &scope);
    return rc;
}

static uint64_t cuda_landed(load_target *t)
{
    cuda_target *c = (cuda_target *)t;
    device_scope scope;
    bool entered = enter_device(c, &scope, NULL, 0) == 0;
    pthread_mutex_lock(&c->lock);
    if (entered) collect_landed(c);
    uint64_t landed = c->landed_bytes;
    pthread_mutex_unlock(&c->lock);
    if (entered) leave_device(c, &scope);
    return landed;
}

/* Every copy submitted has an event on its buffer: waiting for those waits for them all. */
static int wait_for_all_copies(cuda_target *c, char *err, size_t errlen)
{
    int rc = 0;
    pthread_mutex_lock(&c->lock);
    for (cuda_buffer *b; rc == 0 && (b = find_buffer(c, BUFFER_COPYING));) {
        rc = wait_for_copy(c, b, err, errlen);
        if (rc == 0) b->state = BUFFER_FREE;
    }
    pthread_mutex_unlock(&c->lock);
    return rc;
}

static int cuda_finish(load_target *t, char *err, size_t errlen)
{
    cuda_target *c = (cuda_target *)t;
    device_scope scope;
    if (enter_device(c, &scope, err, errlen) != 0) return -1;
    int rc = wait_for_all_copies(c, err, errlen);
    leave_device(c, &scope);
    return rc;
}

static int cuda_copy_out(load_target *t, const void *src, void *dst, size_t len, char *err,
                         size_t errlen)
{
    cuda_target *c = (cuda_target *)t;
    device_scope scope;
    if (enter_device(c, &scope, err, errlen) != 0) return -1;
    cudaError_t rc = cudaMemcpy(dst, src, len, cudaMemcpyDeviceToHost);
    leave_device(c, &scope);
    return rc == cudaSuccess ? 0 : cuda_fail(err, errlen, "cudaMemcpy from the device", rc);
}

static int cuda_read_back(load_target *t, uint64_t offset, void *dst, size_t len, char *err,
                          size_t errlen)
{
    cuda_target *c = (cuda_target *)t;
    if (offset > c->arena_bytes || len > c->arena_bytes - offset)
        return fail(err, errlen, "read beyond the rank's %llu bytes",
                    (unsigned long long)c->arena_bytes);
    return cuda_copy_out(t, c->arena + offset, dst, len, err, errlen);
}

static void *cuda_take_arena(load_target *t)
{
    cuda_target *c = (cuda_target *)t;
    void *arena = c->arena;
    c->arena = NULL;
    c->arena_bytes = 0;
    return arena;
}

/* From whichever thread drops a framework's last tensor: the device is made current first,
 * so that the free puts no context on another GPU. */
static void cuda_free_arena(load_target *t, void *arena, uint64_t bytes)
{
    cuda_target *c = (cuda_target *)t;
    device_scope scope;
    (void)bytes;
    if (!arena || enter_device(c, &scope, NULL, 0) != 0) return;
    cudaFree(arena);
    leave_device(c, &scope);
}

static void release_device_resources(cuda_target *c)
{
    if (c->buffers) wait_for_all_copies(c, NULL, 0); /* asleep; the streams are then idle */
    for (unsigned i = 0; i < c->stream_count; i++) {
        cudaStreamSynchronize(c->streams[i]);
        cudaStreamDestroy(c->streams[i]);
    }
    for (unsigned i = 0; i < c->buffer_count; i++) {
        cudaFreeHost(c->buffers[i].host);
        cudaEventDestroy(c->buffers[i].copied);
    }
    if (c->arena) cudaFree(c->arena);
}

static void cuda_destroy(load_target *t)
{
    cuda_target *c = (cuda_target *)t;
    if (!c) return;
    device_scope scope;
    if (c->get_context && enter_device(c, &scope, NULL, 0) == 0) {
        release_device_resources(c);
        leave_device(c, &scope);
    }
    free(c->buffers);
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->changed);
    free(c);
}

static int cuda_setup(cuda_target *c, size_t staging_bytes, unsigned staging_count, char *err,
                      size_t errlen)
{
    cudaError_t rc;
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
        if (rc != cudaSuccess)
            return fail(err, errlen, "cannot pin %u staging buffers of %zu bytes for %s: %s "
                        "(%s); use fewer --threads or a smaller --chunk-mib", staging_count,
                        staging_bytes, c->device_name, cudaGetErrorString(rc), cudaGetErrorName(rc));
        rc = cudaEventCreateWithFlags(&b->copied, cudaEventDisableTiming | cudaEventBlockingSync);
        if (rc != cudaSuccess) {
            cudaFreeHost(b->host);
            return cuda_fail(err, errlen, "cudaEventCreate", rc);
        }
    }
    return 0;
}

/* Checks `device` against what the driver reports; creates no context. */
static int check_device(int device, char *err, size_t errlen)
{
    int devices = 0;
    cudaError_t rc = cudaGetDeviceCount(&devices);
    if (rc != cudaSuccess || devices == 0)
        return fail(err, errlen, "no CUDA device available for cuda:%d (%s); use --device cpu",
                    device, rc != cudaSuccess ? cudaGetErrorString(rc) : "the driver reports 0 devices");
    if (device < 0 || device >= devices)
        return fail(err, errlen, "cuda:%d does not exist: this machine has %d CUDA device%s "
                    "(cuda:0..%d)", device, devices, devices == 1 ? "" : "s", devices - 1);
    return 0;
}

/* The ring: what load.c asks for, as far as TARGET_CUDA_STAGING_MAX_BYTES allows. */
static int ring_size(size_t staging_bytes, unsigned wanted, unsigned *count, char *err,
                     size_t errlen)
{
    size_t fit = TARGET_CUDA_STAGING_MAX_BYTES / (staging_bytes ? staging_bytes : 1);
    if (fit == 0)
        return fail(err, errlen, "a chunk of %zu MiB does not fit the %zu MiB of pinned staging "
                    "memory a load may use; use a smaller --chunk-mib", staging_bytes >> 20,
                    TARGET_CUDA_STAGING_MAX_BYTES >> 20);
    *count = wanted < fit ? wanted : (unsigned)fit;
    return 0;
}

static cuda_target *new_target(int device, size_t staging_bytes, char *err, size_t errlen)
{
    cuda_target *c = calloc(1, sizeof *c);
    if (!c) return fail(err, errlen, "out of memory"), NULL;
    c->get_context = (PFN_cuCtxGetCurrent_v4000)driver_function("cuCtxGetCurrent");
    c->set_context = (PFN_cuCtxSetCurrent_v4000)driver_function("cuCtxSetCurrent");
    if (!c->get_context || !c->set_context) {
        free(c);
        return fail(err, errlen, "the CUDA driver does not provide cuCtxGetCurrent and "
                    "cuCtxSetCurrent: update the NVIDIA driver"), NULL;
    }
    c->device = device;
    snprintf(c->device_name, sizeof c->device_name, "cuda:%d", device);
    c->base = (load_target){c->device_name, staging_bytes, cuda_alloc, cuda_direct, cuda_acquire,
                            cuda_release, cuda_write, cuda_finish, cuda_landed, cuda_read_back,
                            cuda_destroy, cuda_take_arena, cuda_free_arena, cuda_copy_out};
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->changed, NULL);
    return c;
}

load_target *target_cuda_create(int device, size_t staging_bytes, unsigned staging_count,
                                char *err, size_t errlen)
{
    unsigned ring = 0;
    if (check_device(device, err, errlen) != 0 ||
        ring_size(staging_bytes, staging_count, &ring, err, errlen) != 0)
        return NULL;
    cuda_target *c = new_target(device, staging_bytes, err, errlen);
    if (!c) return NULL;
    device_scope scope;
    int rc = enter_device(c, &scope, err, errlen);
    if (rc == 0) {
        rc = cuda_setup(c, staging_bytes, ring, err, errlen);
        leave_device(c, &scope);
    }
    if (rc != 0) {
        cuda_destroy(&c->base);
        return NULL;
    }
    return &c->base;
}

int target_cuda_visible_devices(void)
{
    int count = 0;
    return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}
