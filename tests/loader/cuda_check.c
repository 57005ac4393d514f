/* hubfs_cuda_check — the measurements and device checks of gpu_check.sh, on a real GPU (built
 * with the CUDA target so that it keeps compiling; never run by ctest).
 *
 *   count                          the CUDA devices this process sees
 *   bandwidth K                    pinned (and pageable) host-to-device GB/s on cuda:K
 *   rows K                         2-D copy cost by row width vs compacting the rows first
 *   contexts MODEL K TP R [pause]  loads rank R of TP to cuda:K and lists the devices that have
 *                                  a primary context in this process (must be cuda:K alone);
 *                                  with `pause`, prints "ready PID" and waits for a line on
 *                                  stdin so that nvidia-smi can look at the process
 *   restore MODEL A K              a thread working on cuda:A loads to cuda:K: its current
 *                                  device must still be A afterwards
 *
 * Figures are printed as "figure<TAB>what<TAB>value<TAB>unit" lines. Exit status 0 when the
 * checks passed. */
#include "loader.h"

#include <cuda.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIB (1u << 20)

static int failed(const char *what, cudaError_t rc)
{
    fprintf(stderr, "hubfs_cuda_check: %s: %s\n", what, cudaGetErrorString(rc));
    return 1;
}

#define TRY(call)                                      \
    do {                                               \
        cudaError_t try_rc_ = (call);                  \
        if (try_rc_ != cudaSuccess) return failed(#call, try_rc_); \
    } while (0)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void figure(const char *what, double value, const char *unit)
{
    printf("figure\t%s\t%.2f\t%s\n", what, value, unit);
}

/* Seconds for `total` bytes host-to-device in `chunk`-byte copies over `nstreams` streams,
 * best of three. */
static int time_h2d(uint8_t *dst, const uint8_t *src, size_t total, size_t chunk,
                    cudaStream_t *streams, int nstreams, double *best)
{
    *best = 1e9;
    for (int rep = 0; rep < 3; rep++) {
        TRY(cudaDeviceSynchronize());
        double start = now();
        for (size_t off = 0, k = 0; off < total; off += chunk, k++)
            TRY(cudaMemcpyAsync(dst + off, src + off, chunk, cudaMemcpyHostToDevice,
                                streams[k % (size_t)nstreams]));
        TRY(cudaDeviceSynchronize());
        if (now() - start < *best) *best = now() - start;
    }
    return 0;
}

static int bandwidth(int device)
{
    const size_t total = 1024u * MIB;
    uint8_t *dst, *pinned, *pageable = malloc(total);
    cudaStream_t streams[4];
    if (!pageable) return 1;
    memset(pageable, 1, total);
    TRY(cudaSetDevice(device));
    TRY(cudaMalloc((void **)&dst, total));
    TRY(cudaHostAlloc((void **)&pinned, total, cudaHostAllocDefault));
    memset(pinned, 1, total);
    for (int i = 0; i < 4; i++) TRY(cudaStreamCreateWithFlags(&streams[i], cudaStreamNonBlocking));
    static const struct { size_t chunk; int streams; bool pinned; } runs[] = {
        {8 * MIB, 1, true}, {8 * MIB, 4, true}, {64 * MIB, 1, true}, {64 * MIB, 4, true},
        {64 * MIB, 1, false}};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        double s;
        if (time_h2d(dst, runs[i].pinned ? pinned : pageable, total, runs[i].chunk, streams,
                     runs[i].streams, &s) != 0)
            return 1;
        char what[96];
        snprintf(what, sizeof what, "%s H2D cuda:%d, %d stream%s, %zu MiB copies",
                 runs[i].pinned ? "pinned" : "pageable", device, runs[i].streams,
                 runs[i].streams > 1 ? "s" : "", runs[i].chunk / MIB);
        figure(what, total / s / 1e9, "GB/s");
    }
    for (int i = 0; i < 4; i++) cudaStreamDestroy(streams[i]);
    cudaFreeHost(pinned);
    cudaFree(dst);
    free(pageable);
    return 0;
}

/* Seconds of one copy (2-D when rows > 1 and pitch > width), best of three, by events. */
static int time_copy(uint8_t *dst, const uint8_t *src, size_t pitch, size_t width, size_t rows,
                     cudaStream_t stream, double *best)
{
    cudaEvent_t start, stop;
    TRY(cudaEventCreate(&start));
    TRY(cudaEventCreate(&stop));
    *best = 1e9;
    for (int rep = 0; rep < 3; rep++) {
        float ms;
        TRY(cudaEventRecord(start, stream));
        if (pitch == width)
            TRY(cudaMemcpyAsync(dst, src, width * rows, cudaMemcpyHostToDevice, stream));
        else
            TRY(cudaMemcpy2DAsync(dst, width, src, pitch, width, rows, cudaMemcpyHostToDevice, stream));
        TRY(cudaEventRecord(stop, stream));
        TRY(cudaEventSynchronize(stop));
        TRY(cudaEventElapsedTime(&ms, start, stop));
        if (ms / 1e3 < *best) *best = ms / 1e3;
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return 0;
}

/* The target's compaction: each row's piece moved to the front, one after another. */
static double time_compaction(uint8_t *buf, size_t pitch, size_t width, size_t rows)
{
    double best = 1e9;
    for (int rep = 0; rep < 3; rep++) {
        double start = now();
        for (size_t r = 0; r < rows; r++) memmove(buf + r * width, buf + r * pitch, width);
        if (now() - start < best) best = now() - start;
    }
    return best;
}

/* Row pieces of 1/8 of their rows (TP 8), as the loader gets them for row-parallel slices. */
static int rows(int device)
{
    static const size_t widths[] = {4, 64, 512, 1408, 4096, 16384, 65536};
    const size_t payload_max = 32u * MIB, rows_max = 2u << 20, span = 256u * MIB;
    uint8_t *dst, *pinned;
    cudaStream_t stream;
    TRY(cudaSetDevice(device));
    TRY(cudaMalloc((void **)&dst, payload_max));
    TRY(cudaHostAlloc((void **)&pinned, span, cudaHostAllocDefault));
    memset(pinned, 3, span);
    TRY(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++) {
        size_t width = widths[i], pitch = 8 * width, n = payload_max / width;
        if (n > rows_max) n = rows_max;
        if (n * pitch > span) n = span / pitch;
        double t2d, tflat;
        if (time_copy(dst, pinned, pitch, width, n, stream, &t2d) != 0 ||
            time_copy(dst, pinned, width, width, n, stream, &tflat) != 0)
            return 1;
        double tcompact = time_compaction(pinned, pitch, width, n);
        char what[96];
        snprintf(what, sizeof what, "2-D copy, %zu-byte pieces of %zu-byte rows: per row", width, pitch);
        figure(what, t2d / n * 1e9, "ns");
        snprintf(what, sizeof what, "2-D copy, %zu-byte pieces", width);
        figure(what, width * n / t2d / 1e9, "GB/s");
        snprintf(what, sizeof what, "compact (1 CPU thread) + 1 copy, %zu-byte pieces", width);
        figure(what, width * n / (tcompact + tflat) / 1e9, "GB/s");
        snprintf(what, sizeof what, "  of which compaction, %zu-byte pieces", width);
        figure(what, width * n / tcompact / 1e9, "GB/s");
    }
    cudaStreamDestroy(stream);
    cudaFreeHost(pinned);
    cudaFree(dst);
    return 0;
}

static void *driver_function(const char *symbol)
{
    void *fn = NULL;
    enum cudaDriverEntryPointQueryResult found;
#if CUDART_VERSION >= 12050
    cudaError_t rc = cudaGetDriverEntryPointByVersion(symbol, &fn, 12000, cudaEnableDefault, &found);
#else
    cudaError_t rc = cudaGetDriverEntryPoint(symbol, &fn, cudaEnableDefault, &found);
#endif
    return rc == cudaSuccess && found == cudaDriverEntryPointSuccess ? fn : NULL;
}

/* Which visible devices have an active primary context in this process (a bit each). */
static int active_contexts(unsigned *mask)
{
    void *get = driver_function("cuDeviceGet"), *state = driver_function("cuDevicePrimaryCtxGetState");
    if (!get || !state) return fprintf(stderr, "hubfs_cuda_check: no driver entry points\n"), 1;
    int count = 0;
    TRY(cudaGetDeviceCount(&count));
    *mask = 0;
    for (int d = 0; d < count && d < 32; d++) {
        CUdevice dev;
        unsigned flags;
        int active = 0;
        if (((PFN_cuDeviceGet_v2000)get)(&dev, d) != CUDA_SUCCESS ||
            ((PFN_cuDevicePrimaryCtxGetState_v7000)state)(dev, &flags, &active) != CUDA_SUCCESS)
            return fprintf(stderr, "hubfs_cuda_check: cannot query cuda:%d\n", d), 1;
        if (active) *mask |= 1u << d;
    }
    return 0;
}

static int load(const char *path, int device, unsigned tp, unsigned rank, loader_model **model,
                loader_rank **out)
{
    char err[LOADER_ERR_LEN], name[24];
    snprintf(name, sizeof name, "cuda:%d", device);
    loader_options options = {.tp_size = tp, .rank = rank, .device = name};
    if (loader_model_open(path, model, err, sizeof err) != 0 ||
        loader_load(*model, &options, out, err, sizeof err) != 0) {
        fprintf(stderr, "hubfs_cuda_check: %s\n", err);
        return 1;
    }
    return 0;
}

static void print_mask(const char *label, unsigned mask)
{
    printf("%s:", label);
    for (int d = 0; d < 32; d++)
        if (mask >> d & 1) printf(" cuda:%d", d);
    printf("%s\n", mask ? "" : " none");
}

static int contexts(const char *path, int device, unsigned tp, unsigned rank, bool pause)
{
    loader_model *model;
    loader_rank *r;
    unsigned mask = 0;
    if (load(path, device, tp, rank, &model, &r) != 0 || active_contexts(&mask) != 0) return 1;
    print_mask("contexts after the load", mask);
    if (pause) {
        char line[16];
        printf("ready %d\n", (int)getpid());
        fflush(stdout);
        if (!fgets(line, sizeof line, stdin)) line[0] = '\0';
    }
    loader_rank_free(r);
    loader_model_close(model);
    return mask == 1u << device ? 0 : 1;
}

static int restore(const char *path, int from, int device)
{
    loader_model *model;
    loader_rank *r;
    int current = -1;
    TRY(cudaSetDevice(from));
    if (load(path, device, 1, 0, &model, &r) != 0) return 1;
    TRY(cudaGetDevice(&current));
    bool kept = current == from;
    uint8_t byte;
    char err[LOADER_ERR_LEN];
    if (loader_rank_read(r, 0, &byte, 1, err, sizeof err) != 0) fprintf(stderr, "%s\n", err);
    loader_rank_free(r);
    loader_model_close(model);
    TRY(cudaGetDevice(&current));
    kept = kept && current == from;
    printf("a thread on cuda:%d that loaded to cuda:%d is on cuda:%d afterwards\n", from, device, current);
    return kept ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "count") == 0) {
        int count = 0;
        printf("%d\n", cudaGetDeviceCount(&count) == cudaSuccess ? count : 0);
        return 0;
    }
    if (strcmp(mode, "bandwidth") == 0 && argc == 3) return bandwidth(atoi(argv[2]));
    if (strcmp(mode, "rows") == 0 && argc == 3) return rows(atoi(argv[2]));
    if (strcmp(mode, "contexts") == 0 && (argc == 6 || argc == 7))
        return contexts(argv[2], atoi(argv[3]), (unsigned)atoi(argv[4]), (unsigned)atoi(argv[5]),
                        argc == 7 && strcmp(argv[6], "pause") == 0);
    if (strcmp(mode, "restore") == 0 && argc == 5)
        return restore(argv[2], atoi(argv[3]), atoi(argv[4]));
    fprintf(stderr, "usage: hubfs_cuda_check count | bandwidth K | rows K | "
                    "contexts MODEL K TP R [pause] | restore MODEL A K\n");
    return 2;
}
