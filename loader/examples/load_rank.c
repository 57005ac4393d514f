/* load_rank — libhubfs from C: loads tensor-parallel rank R of N of a model (a local path, a
 * hubfs mount or an hf:// URL) and prints each tensor's name, dtype, shape and a checksum of
 * its bytes (FNV-1a, 64 bits); with "stream", takes the tensors one at a time as they land.
 *
 *   cc load_rank.c $(pkg-config --cflags --libs hubfs) -o load_rank
 *   ./load_rank /hf/org/model 8 3 [cpu|cuda:K] [stream]
 *
 * or in CMake: find_package(hubfs) and target_link_libraries(load_rank PRIVATE hubfs::hubfs). */
#include <hubfs.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t fnv1a(const uint8_t *bytes, uint64_t len)
{
    uint64_t hash = 0xcbf29ce484222325u;
    for (uint64_t i = 0; i < len; i++) hash = (hash ^ bytes[i]) * 0x100000001b3u;
    return hash;
}

/* One line per tensor; loader_rank_read copies from wherever the arena is (a GPU too). */
static int print_tensor(const loader_rank *rank, size_t index)
{
    loader_tensor_info t;
    char err[LOADER_ERR_LEN];
    loader_rank_tensor(rank, index, &t);
    uint8_t *bytes = malloc(t.nbytes ? t.nbytes : 1);
    if (!bytes || loader_rank_read(rank, t.offset, bytes, t.nbytes, err, sizeof err) != 0) {
        fprintf(stderr, "load_rank: %s\n", bytes ? err : "out of memory");
        free(bytes);
        return -1;
    }
    printf("%s %s [", t.name, t.dtype);
    for (size_t d = 0; d < t.ndim; d++) printf("%s%" PRIu64, d ? "," : "", t.shape[d]);
    printf("] %016" PRIx64 "\n", fnv1a(bytes, t.nbytes));
    free(bytes);
    return 0;
}

static int load_whole(const loader_model *model, const loader_options *options)
{
    char err[LOADER_ERR_LEN];
    loader_rank *rank;
    if (loader_load(model, options, &rank, err, sizeof err) != 0) {
        fprintf(stderr, "load_rank: %s\n", err);
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < loader_rank_tensor_count(rank); i++) rc = print_tensor(rank, i);
    loader_rank_free(rank);
    return rc ? 1 : 0;
}

static int load_streamed(const loader_model *model, const loader_options *options)
{
    char err[LOADER_ERR_LEN];
    loader_stream *stream;
    if (loader_stream_open(model, options, &stream, err, sizeof err) != 0) {
        fprintf(stderr, "load_rank: %s\n", err);
        return 1;
    }
    loader_rank *group;
    size_t index;
    int got, rc = 0;
    while (rc == 0 && (got = loader_stream_next(stream, &group, &index, err, sizeof err)) == 1) {
        rc = print_tensor(group, index);
        loader_rank_free(group);
    }
    if (rc == 0 && got < 0) {
        fprintf(stderr, "load_rank: %s\n", err);
        rc = -1;
    }
    loader_stream_close(stream);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s PATH TP RANK [cpu|cuda:K] [stream]\n", argv[0]);
        return 2;
    }
    loader_options options = {.tp_size = (unsigned)atoi(argv[2]), .rank = (unsigned)atoi(argv[3]),
                              .device = argc > 4 ? argv[4] : "cpu"};
    bool stream = argc > 5 && strcmp(argv[5], "stream") == 0;
    char notice[GLUE_NOTICE_LEN], err[LOADER_ERR_LEN];
    loader_model *model;
    if (glue_model_open(argv[1], NULL, &model, notice, err, sizeof err) != 0) {
        fprintf(stderr, "load_rank: %s\n", err);
        return 1;
    }
    if (notice[0]) fprintf(stderr, "load_rank: note: %s\n", notice);
    int rc = stream ? load_streamed(model, &options) : load_whole(model, &options);
    loader_model_close(model);
    return rc;
}
