/* The loader's stream and DLPack exports (libhubfs's API for frameworks), on a model written
 * here: every streamed tensor, in file order, holds the bytes loader_load gives, whether the
 * groups are one tensor or several, and stays valid after the stream is closed; a stream left
 * early stops; a failed read ends the stream with its message; DLPack views describe the
 * tensor and keep the rank alive until their deleter runs. Under ASan (CI) every reference
 * count is checked for leaks and use after free. */
#include "check.h"
#include "hubfs.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_TENSORS 16

typedef struct spec {
    const char *name, *dtype;
    unsigned bits;
    uint64_t rows, cols; /* cols 0: a vector of `rows` */
} spec;

/* Llama-named, so the built-in rules split them: colwise, rowwise, replicated, vocabulary. */
static const spec specs[] = {
    {"model.embed_tokens.weight", "F32", 32, 64, 32},
    {"model.layers.0.input_layernorm.weight", "F32", 32, 32, 0},
    {"model.layers.0.mlp.up_proj.weight", "BF16", 16, 96, 32},
    {"model.layers.0.mlp.down_proj.weight", "BF16", 16, 32, 96},
    {"model.layers.0.post_attention_layernorm.weight", "F16", 16, 32, 0},
    {"model.norm.weight", "F32", 32, 32, 0},
    {"lm_head.weight", "F16", 16, 64, 32},
    {"packed", "F4", 4, 8, 16},
};
#define SPEC_COUNT (sizeof specs / sizeof specs[0])

static uint64_t spec_bytes(const spec *s)
{
    return s->rows * (s->cols ? s->cols : 1) * s->bits / 8;
}

static uint8_t byte_at(size_t tensor, uint64_t i)
{
    return (uint8_t)(i * 131 + tensor * 17 + (i >> 8));
}

/* A safetensors file of specs, in order, each tensor's bytes a pattern of its own. */
static void write_model(const char *path)
{
    char header[4096];
    size_t used = (size_t)snprintf(header, sizeof header, "{");
    uint64_t offset = 0;
    for (size_t i = 0; i < SPEC_COUNT; i++) {
        const spec *s = &specs[i];
        char shape[64];
        unsigned long long rows = s->rows, cols = s->cols;
        if (cols) snprintf(shape, sizeof shape, "[%llu,%llu]", rows, cols);
        else snprintf(shape, sizeof shape, "[%llu]", rows);
        used += (size_t)snprintf(header + used, sizeof header - used,
                                 "%s\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%llu,%llu]}",
                                 i ? "," : "", s->name, s->dtype, shape, (unsigned long long)offset,
                                 (unsigned long long)(offset + spec_bytes(s)));
        offset += spec_bytes(s);
    }
    used += (size_t)snprintf(header + used, sizeof header - used, "}");
    while (used % 8) header[used++] = ' ';
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f) return;
    uint8_t length[8];
    for (int b = 0; b < 8; b++) length[b] = (uint8_t)((uint64_t)used >> (8 * b));
    fwrite(length, 1, 8, f);
    fwrite(header, 1, used, f);
    for (size_t i = 0; i < SPEC_COUNT; i++)
        for (uint64_t k = 0; k < spec_bytes(&specs[i]); k++) fputc(byte_at(i, k), f);
    fclose(f);
}

static bool same_tensor(const loader_rank *a, size_t ia, const loader_rank *b, size_t ib)
{
    loader_tensor_info x, y;
    char err[LOADER_ERR_LEN];
    loader_rank_tensor(a, ia, &x);
    loader_rank_tensor(b, ib, &y);
    if (strcmp(x.name, y.name) != 0 || strcmp(x.dtype, y.dtype) != 0 || x.ndim != y.ndim || x.nbytes != y.nbytes)
        return false;
    for (size_t d = 0; d < x.ndim; d++)
        if (x.shape[d] != y.shape[d]) return false;
    uint8_t *p = malloc(x.nbytes + 1), *q = malloc(x.nbytes + 1);
    bool same = p && q && loader_rank_read(a, x.offset, p, x.nbytes, err, sizeof err) == 0 &&
                loader_rank_read(b, y.offset, q, y.nbytes, err, sizeof err) == 0 &&
                memcmp(p, q, x.nbytes) == 0;
    free(p);
    free(q);
    return same;
}

typedef struct streamed {
    loader_rank *rank[MAX_TENSORS];
    size_t index[MAX_TENSORS], count;
} streamed;

static void stream_all(const loader_model *m, const loader_options *o, streamed *out)
{
    char err[LOADER_ERR_LEN];
    loader_stream *s;
    out->count = 0;
    CHECK_EQ_INT(loader_stream_open(m, o, &s, err, sizeof err), 0);
    int got;
    while (out->count < MAX_TENSORS &&
           (got = loader_stream_next(s, &out->rank[out->count], &out->index[out->count], err, sizeof err)) == 1)
        out->count++;
    CHECK_EQ_INT(loader_stream_next(s, &out->rank[out->count], &out->index[out->count], err, sizeof err), 0);
    loader_stream_close(s); /* the tensors handed out outlive it */
}

static void test_streams_give_what_a_load_gives(const loader_model *m)
{
    char err[LOADER_ERR_LEN];
    const unsigned tps[] = {1, 2, 4};
    const size_t chunks[] = {0, 4096, 256};
    for (size_t t = 0; t < 3; t++)
        for (unsigned rank = 0; rank < tps[t]; rank++)
            for (size_t c = 0; c < 3; c++) {
                loader_options o = {.tp_size = tps[t], .rank = rank, .reader_threads = 2, .chunk_bytes = chunks[c]};
                loader_rank *whole;
                CHECK_EQ_INT(loader_load(m, &o, &whole, err, sizeof err), 0);
                streamed s;
                stream_all(m, &o, &s);
                CHECK_EQ_INT(s.count, loader_rank_tensor_count(whole));
                size_t groups = 0;
                for (size_t i = 0; i < s.count; i++) {
                    CHECK(same_tensor(s.rank[i], s.index[i], whole, i)); /* file order, same bytes */
                    groups += s.index[i] == 0;
                }
                /* 8 MiB reads: one group; 2 x 256 bytes: one per tensor, but for the small ones */
                if (chunks[c] == 0) CHECK_EQ_INT(groups, 1);
                if (chunks[c] == 256) CHECK(groups > 1 && groups < s.count);
                for (size_t i = 0; i < s.count; i++) loader_rank_free(s.rank[i]);
                loader_rank_free(whole);
            }
}

static void test_a_stream_left_early_stops(const loader_model *m)
{
    char err[LOADER_ERR_LEN];
    loader_options o = {.tp_size = 1, .reader_threads = 1, .chunk_bytes = 256};
    loader_stream *s;
    loader_rank *first;
    size_t index;
    CHECK_EQ_INT(loader_stream_open(m, &o, &s, err, sizeof err), 0);
    CHECK_EQ_INT(loader_stream_next(s, &first, &index, err, sizeof err), 1);
    loader_stream_close(s);
    loader_tensor_info t;
    loader_rank_tensor(first, index, &t);
    CHECK(strcmp(t.name, specs[0].name) == 0);
    loader_rank_free(first);
    CHECK_EQ_INT(loader_stream_open(m, &o, &s, err, sizeof err), 0);
    loader_stream_close(s); /* closed before any tensor was taken */
}

static void test_a_failed_read_ends_the_stream_with_its_message(const char *path)
{
    char err[LOADER_ERR_LEN];
    loader_model *m;
    CHECK_EQ_INT(loader_model_open(path, &m, err, sizeof err), 0);
    loader_tensor_info up;
    loader_model_tensor(m, 2, &up);
    CHECK_EQ_INT(truncate(path, (off_t)up.offset + 10), 0); /* gone from the third tensor on */
    loader_options o = {.tp_size = 1, .reader_threads = 2, .chunk_bytes = 1024};
    loader_stream *s;
    CHECK_EQ_INT(loader_stream_open(m, &o, &s, err, sizeof err), 0);
    loader_rank *r;
    size_t index;
    int got, handed = 0;
    while ((got = loader_stream_next(s, &r, &index, err, sizeof err)) == 1) {
        loader_rank_free(r);
        handed++;
    }
    CHECK_EQ_INT(got, -1);
    CHECK_EQ_INT(handed, 2);
    CHECK_STR_CONTAINS(err, "unexpected end of file");
    CHECK_EQ_INT(loader_stream_next(s, &r, &index, err, sizeof err), -1); /* and stays failed */
    loader_stream_close(s);
    loader_model_close(m);
}

static void test_dlpack_views_keep_their_rank(const loader_model *m)
{
    char err[LOADER_ERR_LEN];
    loader_options o = {.tp_size = 2, .rank = 1};
    loader_rank *r;
    CHECK_EQ_INT(loader_load(m, &o, &r, err, sizeof err), 0);
    loader_tensor_info t;
    loader_rank_tensor(r, 3, &t); /* down_proj, rowwise: [32, 48] BF16 */
    DLManagedTensor *typed = loader_rank_dlpack(r, 3, 0, err, sizeof err);
    DLManagedTensor *bytes = loader_rank_dlpack(r, 3, LOADER_DLPACK_BYTES, err, sizeof err);
    CHECK(typed && bytes);
    if (!typed || !bytes) return;
    CHECK_EQ_INT(typed->dl_tensor.device.device_type, kDLCPU);
    CHECK_EQ_INT(typed->dl_tensor.dtype.code, kDLBfloat);
    CHECK_EQ_INT(typed->dl_tensor.dtype.bits, 16);
    CHECK_EQ_INT(typed->dl_tensor.ndim, 2);
    CHECK_EQ_INT(typed->dl_tensor.shape[0], 32);
    CHECK_EQ_INT(typed->dl_tensor.shape[1], 48);
    CHECK(typed->dl_tensor.strides == NULL);
    CHECK(typed->dl_tensor.data == (uint8_t *)loader_rank_data(r) + t.offset);
    CHECK_EQ_INT(bytes->dl_tensor.ndim, 1);
    CHECK_EQ_INT(bytes->dl_tensor.shape[0], (long long)t.nbytes);
    CHECK_EQ_INT(bytes->dl_tensor.dtype.code, kDLUInt);
    uint8_t *copy = malloc(t.nbytes);
    CHECK_EQ_INT(loader_rank_read(r, t.offset, copy, t.nbytes, err, sizeof err), 0);
    loader_rank_free(r); /* the loader's caller lets go: the views still hold the arena */
    CHECK(memcmp(typed->dl_tensor.data, copy, t.nbytes) == 0);
    typed->deleter(typed);
    CHECK(memcmp(bytes->dl_tensor.data, copy, t.nbytes) == 0);
    bytes->deleter(bytes); /* the last reference: ASan sees the arena freed, nothing leaked */
    free(copy);
}

static void test_sub_byte_dtypes_export_as_bytes(const loader_model *m)
{
    char err[LOADER_ERR_LEN];
    loader_options o = {.tp_size = 1};
    loader_rank *r;
    CHECK_EQ_INT(loader_load(m, &o, &r, err, sizeof err), 0);
    size_t packed = SPEC_COUNT - 1;
    CHECK(loader_rank_dlpack(r, packed, 0, err, sizeof err) == NULL);
    CHECK_STR_CONTAINS(err, "tensor 'packed' is F4, which has no DLPack type");
    DLManagedTensor *bytes = loader_rank_dlpack(r, packed, LOADER_DLPACK_BYTES, err, sizeof err);
    CHECK(bytes && bytes->dl_tensor.shape[0] == 64);
    if (bytes) bytes->deleter(bytes);
    CHECK(loader_rank_dlpack(r, SPEC_COUNT, 0, err, sizeof err) == NULL);
    CHECK_STR_CONTAINS(err, "no tensor 8");
    loader_rank_free(r);
}

int main(void)
{
    char directory[] = "/tmp/hubfs-stream-XXXXXX", path[64], err[LOADER_ERR_LEN];
    if (!mkdtemp(directory)) return 1;
    snprintf(path, sizeof path, "%s/model.safetensors", directory);
    write_model(path);
    loader_model *m;
    CHECK_EQ_INT(loader_model_open(path, &m, err, sizeof err), 0);
    test_streams_give_what_a_load_gives(m);
    test_a_stream_left_early_stops(m);
    test_dlpack_views_keep_their_rank(m);
    test_sub_byte_dtypes_export_as_bytes(m);
    loader_model_close(m);
    test_a_failed_read_ends_the_stream_with_its_message(path);
    unlink(path);
    rmdir(directory);
    return check_finish("test_stream_dlpack");
}
