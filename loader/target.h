/* target.h — where a rank's tensors go: host memory or a CUDA device (private).
 *
 * A target holds one arena for the rank's tensors (allocated once) and lends staging buffers
 * of `staging_bytes` to reader threads. A reader fills a staging buffer with file bytes and
 * hands it back with write(), which copies `rows` pieces of `width` bytes (source pitch
 * `src_pitch`, starting at `src_offset` in the buffer) to consecutive arena bytes at
 * `dst_offset`, and recycles the buffer once the copy is done. All functions but create and
 * destroy may be called from several threads at once. */
#ifndef HUBFS_LOADER_TARGET_H
#define HUBFS_LOADER_TARGET_H

#include <stddef.h>
#include <stdint.h>

typedef struct copy_2d {
    uint64_t dst_offset;
    size_t src_offset, src_pitch, width, rows;
} copy_2d;

typedef struct load_target load_target;
struct load_target {
    const char *device; /* "cpu", "cuda:0" */
    size_t staging_bytes;
    int (*alloc_arena)(load_target *t, uint64_t bytes, char *err, size_t errlen);
    /* A host pointer to arena bytes that a read may fill directly, or NULL. */
    void *(*direct)(load_target *t, uint64_t offset, uint64_t len);
    void *(*staging_acquire)(load_target *t, char *err, size_t errlen);
    void (*staging_release)(load_target *t, void *staging);
    /* Copies out of `staging` and releases it (also when the copy fails). */
    int (*write)(load_target *t, void *staging, const copy_2d *copy, char *err, size_t errlen);
    /* Waits until every write has landed. */
    int (*finish)(load_target *t, char *err, size_t errlen);
    /* Bytes of write()s whose copies have landed (never decreasing); NULL when write() lands
     * before it returns. */
    uint64_t (*landed)(load_target *t);
    int (*read_back)(load_target *t, uint64_t offset, void *dst, size_t len, char *err,
                     size_t errlen);
    void (*destroy)(load_target *t);
    /* Hands the filled arena over (its address: device memory for CUDA): the target forgets
     * it, so that alloc_arena may make another, and the caller releases it with free_arena,
     * from any thread, before the target is destroyed. Ranks keep their tensors this way,
     * and a stream fills one arena after another through the same staging ring. */
    void *(*take_arena)(load_target *t);
    void (*free_arena)(load_target *t, void *arena, uint64_t bytes);
    /* Copies len bytes at `src`, inside a taken arena, to host memory. */
    int (*copy_out)(load_target *t, const void *src, void *dst, size_t len, char *err,
                    size_t errlen);
};

load_target *target_host_create(size_t staging_bytes, unsigned staging_count, char *err,
                                size_t errlen);
/* Pinned memory is slow to allocate and shared by every rank of a node: a CUDA target's ring
 * of staging buffers never holds more than this, whatever the thread count and chunk size. */
#define TARGET_CUDA_STAGING_MAX_BYTES ((size_t)1 << 30)

/* Fails with a clear message when built without CUDA or when no device is present. The ring
 * has staging_count buffers, or as many as fit in TARGET_CUDA_STAGING_MAX_BYTES. Every
 * function makes `device` current for the calling thread and puts back the context the thread
 * had (a thread that had none is left on `device`). */
load_target *target_cuda_create(int device, size_t staging_bytes, unsigned staging_count,
                                char *err, size_t errlen);
/* The CUDA devices this process sees (after CUDA_VISIBLE_DEVICES); 0 when there are none or
 * when built without CUDA. Creates no context. */
int target_cuda_visible_devices(void);

#endif
