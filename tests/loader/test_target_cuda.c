/* The CUDA target (loader/target_cuda.c) against the strict stand-in for the runtime
 * (fake_cudart.c): no context on a device the load did not ask for, the caller's device put
 * back, readers that sleep while copies are slow, row pieces sent as 2-D copies in place, a
 * bounded pinned ring, progress that counts landed bytes, errors reported — and first, that
 * the stand-in catches what these checks rely on it to catch. Each scenario runs in a fresh
 * thread, because the current device is per thread. Bytes are checked against a pattern
 * computed independently of the loader. */
#include "check.h"
#include "fake_cudart.h"
#include "loader.h"
#include "target.h"

#include <cuda_runtime.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define STAGING (64u << 10)
#define PINNED_MAX ((size_t)1 << 30) /* the documented 1 GiB bound of the ring */

static const char *const knobs[] = {
    "HUBFS_FAKE_CUDA_DEVICES", "HUBFS_FAKE_CUDA_GBPS", "HUBFS_FAKE_CUDA_JITTER_US",
    "HUBFS_FAKE_CUDA_ROW_NS", "HUBFS_FAKE_CUDA_COPY_US", "HUBFS_FAKE_CUDA_PINNED_LIMIT",
    "HUBFS_FAKE_CUDA_FAIL", "HUBFS_FAKE_CUDA_FAIL_COPY", "HUBFS_FAKE_CUDA_MEMORY",
    "CUDA_VISIBLE_DEVICES"};

/* Sets the stand-in's knobs ("NAME=value" strings, then NULL) and forgets the last scenario. */
static void configure(const char *setting, ...)
{
    for (size_t i = 0; i < sizeof knobs / sizeof knobs[0]; i++) unsetenv(knobs[i]);
    va_list ap;
    va_start(ap, setting);
    for (const char *s = setting; s; s = va_arg(ap, const char *)) putenv((char *)s);
    va_end(ap);
    fake_cuda_reset();
}

static void run_in_fresh_thread(void *(*scenario)(void *), void *arg)
{
    pthread_t id;
    if (pthread_create(&id, NULL, scenario, arg) != 0) {
        CHECK(!"cannot start a thread");
        return;
    }
    pthread_join(id, NULL);
}

/* Exactly the devices in `mask` got a context, and no rule was broken. */
static void check_contexts_and_rules(unsigned mask)
{
    fake_cuda_stats s;
    fake_cuda_get_stats(&s);
    CHECK_EQ_INT(s.context_mask, mask);
    for (int d = 0; d < 16; d++)
        if ((s.context_mask & ~mask) >> d & 1)
            fprintf(stderr, "  stray context on cuda:%d, created by %s\n", d, fake_cuda_context_creator(d));
    CHECK_EQ_INT(s.violations, 0);
    for (unsigned i = 0; fake_cuda_violation(i); i++) fprintf(stderr, "  %s\n", fake_cuda_violation(i));
}

static uint8_t pattern(uint64_t i, unsigned seed)
{
    return (uint8_t)((i * 2654435761u + seed * 40503u) >> 13);
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) p[i] = pattern(i, seed);
}

static int current_device(void)
{
    int d = -1;
    cudaGetDevice(&d);
    return d;
}

/* Acquires a staging buffer in the calling thread, fills `len` pattern bytes and writes them to
 * arena offset `dst`. */
static int submit(load_target *t, uint64_t dst, size_t len, unsigned seed)
{
    char err[512];
    uint8_t *staging = t->staging_acquire(t, err, sizeof err);
    if (!staging) return fprintf(stderr, "  acquire: %s\n", err), -1;
    fill(staging, len, seed);
    copy_2d copy = {dst, 0, len, len, 1};
    if (t->write(t, staging, &copy, err, sizeof err) != 0) return fprintf(stderr, "  write: %s\n", err), -1;
    return 0;
}

static bool arena_holds_pattern(load_target *t, uint64_t offset, size_t len, unsigned seed)
{
    char err[512];
    uint8_t *back = malloc(len);
    bool same = back && t->read_back(t, offset, back, len, err, sizeof err) == 0;
    for (size_t i = 0; same && i < len; i++) same = back[i] == pattern(i, seed);
    free(back);
    return same;
}

typedef struct waiter {
    load_target *t;
    void *staging;
    double wall_s, cpu_s;
    char err[512];
} waiter;

static double seconds(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A reader's first call: acquire, timed in wall and in this thread's CPU. */
static void *acquire_as_new_reader(void *arg)
{
    waiter *w = arg;
    double wall = seconds(CLOCK_MONOTONIC), cpu = seconds(CLOCK_THREAD_CPUTIME_ID);
    w->staging = w->t->staging_acquire(w->t, w->err, sizeof w->err);
    w->wall_s = seconds(CLOCK_MONOTONIC) - wall;
    w->cpu_s = seconds(CLOCK_THREAD_CPUTIME_ID) - cpu;
    return NULL;
}

/* Every buffer of a `count`-buffer ring on `device` copying, then a new thread's first call
 * must wait for one. */
static load_target *ring_full_of_copies(int device, unsigned count, waiter *w)
{
    char err[512];
    load_target *t = target_cuda_create(device, STAGING, count, err, sizeof err);
    if (!t) return fprintf(stderr, "  create: %s\n", err), NULL;
    CHECK_EQ_INT(t->alloc_arena(t, (count + 1) * STAGING, err, sizeof err), 0);
    for (unsigned i = 0; i < count; i++) CHECK_EQ_INT(submit(t, i * STAGING, STAGING, i), 0);
    *w = (waiter){.t = t};
    run_in_fresh_thread(acquire_as_new_reader, w);
    return t;
}

/* ---- the stand-in is strict ---- */

static void *double_catches_misuse(void *unused)
{
    (void)unused;
    cudaStream_t stream;
    cudaEvent_t event;
    uint8_t *device_memory, *pinned, *pageable = malloc(4096);
    CHECK_EQ_INT(cudaSetDevice(1), cudaSuccess);
    CHECK_EQ_INT(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    CHECK_EQ_INT(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), cudaSuccess);
    CHECK_EQ_INT(cudaMalloc((void **)&device_memory, 4096), cudaSuccess);
    CHECK_EQ_INT(cudaHostAlloc((void **)&pinned, 4096, cudaHostAllocDefault), cudaSuccess);
    CHECK_EQ_INT(cudaMemcpyAsync(device_memory, pageable, 4096, cudaMemcpyHostToDevice, stream),
                 cudaErrorInvalidValue);
    CHECK_EQ_INT(cudaMemcpyAsync(device_memory, pinned, 8192, cudaMemcpyHostToDevice, stream),
                 cudaErrorInvalidValue); /* beyond the pinned buffer */
    fake_cuda_stats s;
    fill(pinned, 4096, 1);
    CHECK_EQ_INT(cudaMemcpyAsync(device_memory, pinned, 4096, cudaMemcpyHostToDevice, stream), cudaSuccess);
    CHECK_EQ_INT(cudaEventRecord(event, stream), cudaSuccess);
    fake_cuda_get_stats(&s);
    CHECK_EQ_INT(s.landed_bytes, 0); /* queued, not done */
#ifndef __SANITIZE_THREAD__ /* where the refill is reported as the data race it is */
    fill(pinned, 4096, 2); /* refilled before the copy completed: the device gets the refill */
#endif
    CHECK_EQ_INT(cudaEventSynchronize(event), cudaSuccess);
    fake_cuda_get_stats(&s);
    CHECK_EQ_INT(s.landed_bytes, 4096);
    CHECK_EQ_INT(cudaMemcpy(pageable, device_memory, 4096, cudaMemcpyDeviceToHost), cudaSuccess);
    CHECK(memcmp(pageable, pinned, 4096) == 0);
    CHECK_EQ_INT(cudaSetDevice(0), cudaSuccess);
    CHECK_EQ_INT(cudaMemcpyAsync(device_memory, pinned, 4096, cudaMemcpyHostToDevice, stream),
                 cudaErrorInvalidResourceHandle);
    CHECK_EQ_INT(cudaSetDevice(1), cudaSuccess);
    CHECK_EQ_INT(cudaFreeHost(pinned), cudaSuccess);
    CHECK_EQ_INT(cudaFree(device_memory), cudaSuccess);
    CHECK_EQ_INT(cudaEventDestroy(event), cudaSuccess);
    CHECK_EQ_INT(cudaStreamDestroy(stream), cudaSuccess);
    free(pageable);
    fake_cuda_get_stats(&s);
    CHECK_EQ_INT(s.violations, 3);
    CHECK_EQ_INT(s.context_mask, 3);
    return NULL;
}

static void *wait_in_thread_without_context(void *event)
{
    CHECK_EQ_INT(cudaEventSynchronize(event), cudaErrorInvalidResourceHandle);
    return NULL;
}

static void *double_records_stray_contexts(void *unused)
{
    (void)unused;
    cudaEvent_t event;
    CHECK_EQ_INT(cudaSetDevice(1), cudaSuccess);
    CHECK_EQ_INT(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), cudaSuccess);
    run_in_fresh_thread(wait_in_thread_without_context, event);
    CHECK_STR_CONTAINS(fake_cuda_context_creator(0), "cudaEventSynchronize");
    CHECK_EQ_INT(cudaEventDestroy(event), cudaSuccess);
    return NULL;
}

static void test_the_double_is_strict(void)
{
    configure("HUBFS_FAKE_CUDA_DEVICES=2", "HUBFS_FAKE_CUDA_GBPS=0.00002", NULL); /* 0.2 s a copy */
    run_in_fresh_thread(double_catches_misuse, NULL);
    configure("HUBFS_FAKE_CUDA_DEVICES=2", NULL);
    run_in_fresh_thread(double_records_stray_contexts, NULL);
}

/* ---- finding 1: every entry point sets the device ---- */

/* A reader whose first CUDA call is the wait in staging_acquire (the whole ring copying) must
 * wait on cuda:1, not create a context on its default device, GPU 0. */
static void *reader_waits_on_the_targets_device(void *unused)
{
    (void)unused;
    waiter w;
    load_target *t = ring_full_of_copies(1, 3, &w);
    if (!t) return NULL;
    CHECK(w.staging != NULL);
    if (!w.staging) fprintf(stderr, "  the new reader's acquire: %s\n", w.err);
    char err[512];
    if (w.staging) {
        fill(w.staging, STAGING, 3);
        copy_2d copy = {3 * STAGING, 0, STAGING, STAGING, 1};
        CHECK_EQ_INT(t->write(t, w.staging, &copy, err, sizeof err), 0);
    }
    CHECK_EQ_INT(t->finish(t, err, sizeof err), 0);
    for (unsigned i = 0; i < 4; i++) CHECK(arena_holds_pattern(t, i * STAGING, STAGING, i));
    t->destroy(t);
    return NULL;
}

static void test_no_context_on_a_device_not_asked_for(void)
{
    configure("HUBFS_FAKE_CUDA_DEVICES=2", "HUBFS_FAKE_CUDA_GBPS=0.01", NULL);
    run_in_fresh_thread(reader_waits_on_the_targets_device, NULL);
    check_contexts_and_rules(1u << 1);
}

/* ---- finding 2: the caller's device is put back ---- */

static void *framework_keeps_its_device(void *unused)
{
    (void)unused;
    char err[512];
    CHECK_EQ_INT(cudaSetDevice(0), cudaSuccess); /* the framework works on cuda:0 */
    load_target *t = target_cuda_create(1, STAGING, 3, err, sizeof err);
    CHECK(t != NULL);
    if (!t) return NULL;
    CHECK_EQ_INT(current_device(), 0);
    CHECK_EQ_INT(t->alloc_arena(t, 2 * STAGING, err, sizeof err), 0);
    CHECK_EQ_INT(current_device(), 0);
    uint8_t *staging = t->staging_acquire(t, err, sizeof err);
    CHECK_EQ_INT(current_device(), 0);
    if (staging) {
        fill(staging, STAGING, 7);
        copy_2d copy = {STAGING, 0, STAGING, STAGING, 1};
        CHECK_EQ_INT(t->write(t, staging, &copy, err, sizeof err), 0);
        CHECK_EQ_INT(current_device(), 0);
    }
    CHECK_EQ_INT(t->finish(t, err, sizeof err), 0);
    CHECK_EQ_INT(current_device(), 0);
    CHECK(arena_holds_pattern(t, STAGING, STAGING, 7));
    CHECK_EQ_INT(current_device(), 0);
    t->destroy(t);
    CHECK_EQ_INT(current_device(), 0);
    return NULL;
}

static void test_the_callers_device_is_put_back(void)
{
    configure("HUBFS_FAKE_CUDA_DEVICES=2", NULL);
    run_in_fresh_thread(framework_keeps_its_device, NULL);
    check_contexts_and_rules(3);
}

/* ---- finding 3: waiting readers sleep ---- */

static void *waiting_reader_sleeps(void *unused)
{
    (void)unused;
    waiter w;
    load_target *t = ring_full_of_copies(0, 2, &w); /* each copy ~130 ms */
    if (!t) return NULL;
    char err[512];
    if (w.staging) t->staging_release(t, w.staging);
    CHECK_EQ_INT(t->finish(t, err, sizeof err), 0);
    t->destroy(t);
    printf("a reader waiting for a copy: %.1f ms, of which %.1f ms on the CPU\n", w.wall_s * 1e3,
           w.cpu_s * 1e3);
    CHECK(w.wall_s > 0.010);
    CHECK(w.cpu_s < 0.05 * w.wall_s); /* spinning costs a core while it runs */
    return NULL;
}

static void test_waiting_readers_sleep(void)
{
    configure("HUBFS_FAKE_CUDA_GBPS=0.0005", "HUBFS_FAKE_CUDA_JITTER_US=0", NULL);
    run_in_fresh_thread(waiting_reader_sleeps, NULL);
    check_contexts_and_rules(1);
}

/* ---- finding 4: row pieces land in place, as one 2-D copy each ---- */

typedef struct row_case {
    size_t pitch, width, rows, src_offset;
} row_case;

/* Rank pieces of rows read whole: 1,024 bytes of 8,192 (TP 8 of a BF16 row of 4,096), 4 bytes
 * of 32 (a scale tensor), a piece at the end of its row, rows already contiguous, and rows
 * wide enough for a 2-D copy. */
static const row_case row_cases[] = {
    {8192, 1024, 64, 5 * 1024}, {32, 4, 2048, 12}, {512, 64, 128, 448},
    {4096, 4096, 16, 0},        {128u << 10, 64u << 10, 4, 32u << 10},
};

static void *row_pieces_land_in_place(void *unused)
{
    (void)unused;
    char err[512];
    const size_t staging_bytes = 512u << 10, ncases = sizeof row_cases / sizeof row_cases[0];
    load_target *t = target_cuda_create(0, staging_bytes, 3, err, sizeof err);
    CHECK(t != NULL);
    if (!t) return NULL;
    CHECK_EQ_INT(t->alloc_arena(t, ncases * staging_bytes, err, sizeof err), 0);
    for (size_t k = 0; k < ncases; k++) {
        const row_case *rc = &row_cases[k];
        uint8_t *staging = t->staging_acquire(t, err, sizeof err);
        CHECK(staging != NULL);
        if (!staging) break;
        fill(staging, rc->rows * rc->pitch, (unsigned)k);
        copy_2d copy = {k * staging_bytes, rc->src_offset, rc->pitch, rc->width, rc->rows};
        CHECK_EQ_INT(t->write(t, staging, &copy, err, sizeof err), 0);
    }
    CHECK_EQ_INT(t->finish(t, err, sizeof err), 0);
    for (size_t k = 0; k < ncases; k++) {
        const row_case *rc = &row_cases[k];
        size_t len = rc->rows * rc->width;
        uint8_t *back = malloc(len);
        CHECK(back && t->read_back(t, k * staging_bytes, back, len, err, sizeof err) == 0);
        bool same = back != NULL;
        for (size_t i = 0; same && i < len; i++)
            same = back[i] == pattern(rc->src_offset + i / rc->width * rc->pitch + i % rc->width,
                                      (unsigned)k);
        CHECK(same);
        if (!same) fprintf(stderr, "  row case %zu: pieces of %zu of %zu bytes differ\n", k,
                           rc->width, rc->pitch);
        free(back);
    }
    t->destroy(t);
    return NULL;
}

/* No CPU moves the pieces together first: on a real GPU the copy engine's 2-D copy is faster
 * than that at every width gpu_check.sh measures, and reader threads have reading to do. */
static void test_row_pieces_are_2d_copies(void)
{
    configure("HUBFS_FAKE_CUDA_JITTER_US=0", NULL);
    run_in_fresh_thread(row_pieces_land_in_place, NULL);
    check_contexts_and_rules(1);
    fake_cuda_stats s;
    fake_cuda_get_stats(&s);
    size_t pieces = 0, rows = 0;
    for (size_t k = 0; k < sizeof row_cases / sizeof row_cases[0]; k++)
        if (row_cases[k].pitch != row_cases[k].width) pieces++, rows += row_cases[k].rows;
    CHECK_EQ_INT(s.copies, sizeof row_cases / sizeof row_cases[0]);
    CHECK_EQ_INT(s.copies_2d, pieces);
    CHECK_EQ_INT(s.rows_2d, rows);
}

/* ---- finding 5: the pinned ring is bounded ---- */

static void *ring_stays_within_bound(void *unused)
{
    (void)unused;
    char err[512];
    load_target *t = target_cuda_create(0, 64u << 20, 66, err, sizeof err); /* 64 threads */
    CHECK(t != NULL);
    if (!t) {
        fprintf(stderr, "  create: %s\n", err);
        return NULL;
    }
    CHECK_EQ_INT(t->alloc_arena(t, 64u << 20, err, sizeof err), 0);
    CHECK_EQ_INT(submit(t, 0, 64u << 20, 9), 0);
    CHECK_EQ_INT(t->finish(t, err, sizeof err), 0);
    CHECK(arena_holds_pattern(t, 0, 64u << 20, 9));
    t->destroy(t);
    fake_cuda_stats s;
    fake_cuda_get_stats(&s);
    printf("64 readers with 64 MiB chunks: %llu MiB pinned\n", (unsigned long long)(s.pinned_peak >> 20));
    CHECK(s.pinned_peak <= PINNED_MAX);
    t = target_cuda_create(0, (size_t)2 << 30, 3, err, sizeof err);
    CHECK(t == NULL);
    CHECK_STR_CONTAINS(err, "pinned staging memory");
    CHECK_STR_CONTAINS(err, "--chunk-mib");
    return NULL;
}

static void test_the_pinned_ring_is_bounded(void)
{
    configure("HUBFS_FAKE_CUDA_PINNED_LIMIT=1073741824", NULL);
    run_in_fresh_thread(ring_stays_within_bound, NULL);
    check_contexts_and_rules(1);
}

/* ---- finding 7: progress counts landed bytes; a whole load on cuda:1 ---- */

#define ROWS 256u
#define ROW_BYTES 4096u
#define TP 4u
#define RANK 2u

/* One rowwise tensor (down_proj: rank RANK of TP takes a quarter of each row) and one
 * replicated, as U8 so that every byte is its own element. */
static int write_model(const char *path)
{
    char header[512];
    int n = snprintf(header, sizeof header,
                     "{\"model.layers.0.mlp.down_proj.weight\":{\"dtype\":\"U8\",\"shape\":[%u,%u],"
                     "\"data_offsets\":[0,%u]},\"model.norm.weight\":{\"dtype\":\"U8\",\"shape\":[%u],"
                     "\"data_offsets\":[%u,%u]}}", ROWS, ROW_BYTES, ROWS * ROW_BYTES, ROW_BYTES,
                     ROWS * ROW_BYTES, (ROWS + 1) * ROW_BYTES);
    while (n % 8) header[n++] = ' ';
    size_t data = (ROWS + 1) * ROW_BYTES;
    uint8_t *bytes = malloc(data), length[8];
    FILE *f = fopen(path, "wb");
    if (!bytes || !f) return free(bytes), f ? fclose(f) : 0, -1;
    fill(bytes, data, 11);
    for (int i = 0; i < 8; i++) length[i] = (uint8_t)((uint64_t)n >> (8 * i));
    int rc = fwrite(length, 1, 8, f) == 8 && fwrite(header, 1, (size_t)n, f) == (size_t)n &&
             fwrite(bytes, 1, data, f) == data ? 0 : -1;
    free(bytes);
    return fclose(f) == 0 ? rc : -1;
}

typedef struct progress_log {
    unsigned calls, ahead_of_device, backwards;
    uint64_t last, total;
} progress_log;

static void on_progress(void *ctx, uint64_t done, uint64_t total)
{
    progress_log *log = ctx;
    fake_cuda_stats s;
    fake_cuda_get_stats(&s);
    log->calls++;
    if (done > s.landed_bytes) log->ahead_of_device++;
    if (done <= log->last) log->backwards++;
    log->last = done;
    log->total = total;
}

static bool rank_tensor_is(const loader_rank *rank, size_t index, uint64_t len,
                           uint64_t (*source_index)(uint64_t))
{
    loader_tensor_info info;
    loader_rank_tensor(rank, index, &info);
    char err[LOADER_ERR_LEN];
    uint8_t *back = malloc(len);
    bool same = back && info.nbytes == len &&
                loader_rank_read(rank, info.offset, back, len, err, sizeof err) == 0;
    for (uint64_t i = 0; same && i < len; i++) same = back[i] == pattern(source_index(i), 11);
    free(back);
    return same;
}

static uint64_t down_proj_source(uint64_t i)
{
    const uint64_t piece = ROW_BYTES / TP;
    return i / piece * ROW_BYTES + RANK * piece + i % piece;
}

static uint64_t norm_source(uint64_t i)
{
    return ROWS * ROW_BYTES + i;
}

static void *load_reports_landed_bytes(void *path)
{
    char err[LOADER_ERR_LEN];
    loader_model *model;
    if (loader_model_open(path, &model, err, sizeof err) != 0) {
        CHECK(!"model opens");
        fprintf(stderr, "  %s\n", err);
        return NULL;
    }
    progress_log log = {0};
    loader_options options = {.tp_size = TP, .rank = RANK, .device = "cuda:1", .reader_threads = 4,
                              .chunk_bytes = 64u << 10, .progress = on_progress, .progress_ctx = &log};
    loader_rank *rank;
    int loaded = loader_load(model, &options, &rank, err, sizeof err);
    CHECK_EQ_INT(loaded, 0);
    if (loaded != 0) fprintf(stderr, "  %s\n", err);
    if (log.ahead_of_device || !log.calls)
        fprintf(stderr, "  %u of %u progress calls counted bytes not yet on the device\n",
                log.ahead_of_device, log.calls);
    CHECK(log.calls > 1);
    CHECK_EQ_INT(log.ahead_of_device, 0);
    CHECK_EQ_INT(log.backwards, 0);
    CHECK_EQ_INT(log.last, ROWS * ROW_BYTES / TP + ROW_BYTES);
    CHECK_EQ_INT(log.total, log.last);
    if (loaded == 0) {
        CHECK(rank_tensor_is(rank, 0, ROWS * ROW_BYTES / TP, down_proj_source));
        CHECK(rank_tensor_is(rank, 1, ROW_BYTES, norm_source));
        loader_rank_free(rank);
    }
    loader_model_close(model);
    return NULL;
}

static void test_a_load_reports_what_landed(void)
{
    char path[] = "/tmp/hubfs-test-target-cuda-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0 && write_model(path) == 0);
    if (fd >= 0) close(fd);
    configure("HUBFS_FAKE_CUDA_DEVICES=2", "HUBFS_FAKE_CUDA_GBPS=0.5", NULL);
    run_in_fresh_thread(load_reports_landed_bytes, path);
    check_contexts_and_rules(1u << 1);
    unlink(path);
}

/* ---- errors ---- */

static void *copy_fault_is_reported(void *unused)
{
    (void)unused;
    char err[512];
    load_target *t = target_cuda_create(0, STAGING, 3, err, sizeof err);
    CHECK(t != NULL);
    if (!t) return NULL;
    CHECK_EQ_INT(t->alloc_arena(t, 3 * STAGING, err, sizeof err), 0);
    for (unsigned i = 0; i < 3; i++) submit(t, i * STAGING, STAGING, i);
    CHECK_EQ_INT(t->finish(t, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "cuda:0");
    CHECK_STR_CONTAINS(err, "an illegal memory access was encountered");
    t->destroy(t);
    return NULL;
}

static void *queueing_failure_frees_the_buffer(void *unused)
{
    (void)unused;
    char err[512];
    load_target *t = target_cuda_create(0, STAGING, 1, err, sizeof err);
    CHECK(t != NULL);
    if (!t) return NULL;
    CHECK_EQ_INT(t->alloc_arena(t, 2 * STAGING, err, sizeof err), 0);
    CHECK_EQ_INT(submit(t, 0, STAGING, 1), 0);
    CHECK_EQ_INT(submit(t, STAGING, STAGING, 2), -1); /* the injected failure */
    CHECK_EQ_INT(submit(t, STAGING, STAGING, 3), 0);  /* the one buffer is usable again */
    CHECK_EQ_INT(t->finish(t, err, sizeof err), 0);
    CHECK(arena_holds_pattern(t, 0, STAGING, 1));
    CHECK(arena_holds_pattern(t, STAGING, STAGING, 3));
    t->destroy(t);
    return NULL;
}

static void *pinning_failure_is_reported(void *unused)
{
    (void)unused;
    char err[512];
    load_target *t = target_cuda_create(0, STAGING, 4, err, sizeof err);
    CHECK(t == NULL);
    CHECK_STR_CONTAINS(err, "cannot pin 4 staging buffers");
    return NULL;
}

static void test_errors_are_reported(void)
{
    configure("HUBFS_FAKE_CUDA_FAIL_COPY=2", "HUBFS_FAKE_CUDA_GBPS=0.05", NULL);
    run_in_fresh_thread(copy_fault_is_reported, NULL);
    configure("HUBFS_FAKE_CUDA_FAIL=cudaMemcpyAsync:2", NULL);
    run_in_fresh_thread(queueing_failure_frees_the_buffer, NULL);
    configure("HUBFS_FAKE_CUDA_FAIL=cudaHostAlloc:3", NULL);
    run_in_fresh_thread(pinning_failure_is_reported, NULL);
}

int main(void)
{
    test_the_double_is_strict();
    test_no_context_on_a_device_not_asked_for();
    test_the_callers_device_is_put_back();
    test_waiting_readers_sleep();
    test_row_pieces_are_2d_copies();
    test_the_pinned_ring_is_bounded();
    test_a_load_reports_what_landed();
    test_errors_are_reported();
    return check_finish("test_loader_target_cuda");
}
