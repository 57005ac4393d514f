/* The read planner: a new stream fetches its read and no more; read-ahead is earned by reading
 * on, as much as was read; safetensors header reads fetch the header only; a tensor reader earns
 * the rest of its tensor once it has read on, a slice reader a sixteenth of what it read, within
 * the tensor, or its whole slice once a rank's share of each tensor is learnt; whole tensors
 * read in file, name (small tensors between) or module (layer by layer) order teach that order and the next tensors
 * along it are prefetched (a layer order learnt in one shard serves the next from its first tensor), within a window bounded by what was read whole; touching each
 * tensor's first bytes (a meta-device load) fetches no tensor data. */
#include "check.h"
#include "planner.h"
#include "safetensors_builder.h"
#include "tensor_map.h"

#include <stdlib.h>
#include <string.h>

#define PAGE 4096ULL

static const planner_config config = {.max_ahead = 32 * MIB, .header_probe = 64 * KIB, .first_prefetch = 4 * MIB};

/* ---- a model file and what was fetched of it ------------------------------------------------ */

typedef struct test_file {
    st_header_bytes header;
    tensor_map *map;
    planner_order order;
    planner_file file;
    const planner_config *config;
    uint8_t *fetched;            /* per page: asked for by some plan */
    uint8_t *read;               /* per page: read */
    size_t pages;
    size_t prefetched[1024];     /* tensors handed out whole for prefetch, in order */
    size_t prefetch_count;
    size_t heads;                /* first bytes of tensors handed out for prefetch */
} test_file;

static void test_file_init(test_file *f, const st_tensor_spec *tensors, size_t count, uint64_t align)
{
    memset(f, 0, sizeof *f);
    CHECK(st_build_header(tensors, count, align, &f->header));
    f->map = tensor_map_build(f->header.bytes, f->header.header_end, f->header.file_size);
    CHECK(f->map != NULL);
    CHECK_EQ_INT(planner_order_init(&f->order, f->map), 0);
    f->file = (planner_file){.size = f->header.file_size, .is_safetensors = true,
                             .header_end = f->header.header_end, .order = &f->order};
    f->config = &config;
    f->pages = (size_t)((f->header.file_size + PAGE - 1) / PAGE);
    f->fetched = calloc(f->pages, 1);
    f->read = calloc(f->pages, 1);
}

static void test_model_init(test_file *f, int layers, model_layout layout)
{
    model_spec model;
    model_spec_init(&model, layers, layout);
    test_file_init(f, model.tensors, model.count, 4096);
}

static void test_file_clear(test_file *f)
{
    planner_order_clear(&f->order);
    tensor_map_free(f->map);
    free(f->header.bytes);
    free(f->fetched);
    free(f->read);
}

static void mark(uint8_t *pages, size_t page_count, plan_range r)
{
    for (uint64_t p = r.begin / PAGE; p < (r.end + PAGE - 1) / PAGE && p < page_count; p++)
        pages[p] = 1;
}

static uint64_t marked_bytes(const uint8_t *pages, size_t page_count)
{
    uint64_t count = 0;
    for (size_t p = 0; p < page_count; p++)
        count += pages[p];
    return count * PAGE;
}

static size_t tensor(const test_file *f, const char *name)
{
    size_t index = tensor_map_find_name(f->map, name);
    CHECK(index < f->map->count);
    return index;
}

static size_t layer_tensor(const test_file *f, int layer, const char *role)
{
    char name[96];
    snprintf(name, sizeof name, "model.layers.%d.%s.weight", layer, role);
    return tensor(f, name);
}

/* A tensor's head, prefetched for readers that touch tensor after tensor, is the window the
 * kernel reads around a touch of its first byte: a few hundred KiB, never its data. */
#define HEAD_REACH (512 * KIB)

/* The first tensor that begins at or after offset; map->count when none. */
static size_t first_tensor_from(const tensor_map *map, uint64_t offset)
{
    size_t low = 0, high = map->count;
    while (low < high) {
        size_t mid = low + (high - low) / 2;
        if (map->tensors[mid].begin < offset)
            low = mid + 1;
        else
            high = mid;
    }
    return low;
}

/* Whether bytes at offset lie within HEAD_REACH of a tensor's first byte. */
static bool near_a_head(const tensor_map *map, uint64_t offset)
{
    size_t next = first_tensor_from(map, offset);
    bool after_next = next < map->count && map->tensors[next].begin - offset < HEAD_REACH;
    bool past_previous = next > 0 && offset - map->tensors[next - 1].begin < HEAD_REACH;
    return after_next || past_previous;
}

/* Plans a read and records what the plan asks for; checks what holds for every plan. */
static read_plan plan_read(test_file *f, planner_streams *streams, uint64_t offset, uint64_t length)
{
    read_plan plan;
    planner_plan_read(streams, &f->file, f->config, offset, length, &plan);
    uint64_t end = offset + length < f->file.size ? offset + length : f->file.size;
    CHECK(plan.demand.begin == offset && plan.demand.end >= end);
    CHECK(plan.ahead.begin == plan.ahead.end || (plan.ahead.begin >= end && plan.ahead.end > plan.ahead.begin));
    CHECK(plan.ahead.end <= f->file.size);
    CHECK(plan.ahead.end - plan.ahead.begin <= f->config->max_ahead);
    mark(f->read, f->pages, (plan_range){offset, end});
    mark(f->fetched, f->pages, plan.demand);
    mark(f->fetched, f->pages, plan.ahead);
    if (plan.rest.end > plan.rest.begin) {   /* a whole tensor */
        size_t t = tensor_map_find(f->map, plan.rest.begin);
        CHECK(t < f->map->count && f->map->tensors[t].begin == plan.rest.begin &&
              f->map->tensors[t].end == plan.rest.end);
        mark(f->fetched, f->pages, plan.rest);
    }
    for (size_t i = 0; i < plan.prefetch_count; i++) {
        plan_range r = plan.prefetch[i];
        CHECK(r.begin < r.end && r.end <= f->file.size);
        size_t t = tensor_map_find(f->map, r.begin);
        bool whole = t < f->map->count && r.begin == f->map->tensors[t].begin &&
                     (r.end == f->map->tensors[t].end || r.end - r.begin == f->config->max_ahead);
        if (whole && f->prefetch_count < sizeof f->prefetched / sizeof f->prefetched[0])
            f->prefetched[f->prefetch_count++] = t;
        f->heads += !whole;
        CHECK(whole || (r.end - r.begin <= HEAD_REACH && first_tensor_from(f->map, r.begin) < f->map->count &&
                        f->map->tensors[first_tensor_from(f->map, r.begin)].begin < r.end));
        mark(f->fetched, f->pages, r);
    }
    return plan;
}

/* Reads a tensor from its first byte to its end in reads of chunk bytes. */
static void read_tensor(test_file *f, planner_streams *streams, size_t index, uint64_t chunk)
{
    const tensor_extent *t = &f->map->tensors[index];
    for (uint64_t at = t->begin; at < t->end; at += chunk)
        plan_read(f, streams, at, t->end - at < chunk ? t->end - at : chunk);
}

/* Where tensor index first appears among the prefetched ones, or SIZE_MAX. */
static size_t prefetch_position(const test_file *f, size_t index)
{
    for (size_t i = 0; i < f->prefetch_count; i++)
        if (f->prefetched[i] == index)
            return i;
    return SIZE_MAX;
}

/* ---- streams and read-ahead ------------------------------------------------------------------ */

static void new_streams_fetch_their_read(void)
{
    planner_streams streams;
    planner_streams_init(&streams);
    planner_file plain = {.size = 64 * MIB};
    read_plan plan;
    planner_plan_read(&streams, &plain, &config, 1000, 4000, &plan);
    CHECK(plan.demand.begin == 1000 && plan.demand.end == 5000);
    CHECK(plan.ahead.end == plan.ahead.begin && plan.prefetch_count == 0);
    planner_plan_read(&streams, &plain, &config, 40 * MIB, 128 * KIB, &plan);   /* another stream */
    CHECK(plan.demand.begin == 40 * MIB && plan.demand.end == 40 * MIB + 128 * KIB);
    CHECK(plan.ahead.end == plan.ahead.begin);
    planner_plan_read(&streams, &plain, &config, 64 * MIB - 10, 100, &plan);    /* clipped at the end */
    CHECK(plan.demand.begin == 64 * MIB - 10 && plan.demand.end == 64 * MIB);

    test_file f;
    test_model_init(&f, 3, LAYOUT_BY_NAME);
    size_t q = layer_tensor(&f, 1, "self_attn.q_proj");
    planner_streams_init(&streams);
    plan = plan_read(&f, &streams, f.map->tensors[q].begin + 5 * PAGE, 3 * PAGE);
    CHECK(plan.demand.end == f.map->tensors[q].begin + 8 * PAGE);
    CHECK(plan.ahead.end == plan.ahead.begin && plan.prefetch_count == 0);
    plan = plan_read(&f, &streams, f.map->tensors[q].begin, 64 * KIB);   /* at a tensor's start */
    CHECK(plan.demand.end == f.map->tensors[q].begin + 64 * KIB);
    CHECK(plan.ahead.end == plan.ahead.begin && plan.prefetch_count == 0);
    test_file_clear(&f);
}

/* How far a stream reading on in order has earned read-ahead after reading up to end, read_so_far
 * bytes since its start: end when nothing. */
typedef uint64_t (*earned_fn)(const void *context, uint64_t end, uint64_t read_so_far, int reads);

/* Reads [from, to) in order, chunk by chunk, through one handle. Whenever the planner asks for
 * read-ahead it asks exactly up to what the stream earned; it never asks further, and never lets
 * what it asked ahead fall under half of that (it may top up in larger, rarer requests). Returns
 * how many reads asked for more. */
static int read_in_order(planner_streams *streams, const planner_file *file, uint64_t from, uint64_t to,
                         uint64_t chunk, earned_fn earned, const void *context)
{
    uint64_t asked = 0;
    int asks = 0, reads = 0;
    CHECK(to <= file->size);
    for (uint64_t at = from; at < to; at += chunk) {
        read_plan plan;
        uint64_t end = to - at < chunk ? to : at + chunk;
        planner_plan_read(streams, file, &config, at, end - at, &plan);
        reads++;
        CHECK(plan.demand.begin == at && plan.demand.end == end);
        uint64_t target = earned(context, end, end - from, reads);
        target = target < file->size ? target : file->size;
        asked = asked > end ? asked : end;
        if (plan.ahead.end > plan.ahead.begin) {
            CHECK_EQ_INT(plan.ahead.begin, asked);
            CHECK_EQ_INT(plan.ahead.end, target);
            asked = plan.ahead.end;
            asks++;
        }
        CHECK(asked <= target || asked == end);
        CHECK(asked - end >= (target - end) / 2);
    }
    return asks;
}

/* planner.c's SHORT_STREAM_BYTES: under it a stream earns three quarters of what it read. */
#define SHORT_STREAM_BYTES (8u << 20)

static uint64_t as_much_as_read(const void *context, uint64_t end, uint64_t read_so_far, int reads)
{
    (void)context;
    uint64_t earned = read_so_far < SHORT_STREAM_BYTES ? read_so_far / 4 * 3 : read_so_far;
    return reads < 2 ? end : end + (earned < config.max_ahead ? earned : config.max_ahead);
}

/* A plain file read on in order earns as much read-ahead as it has read, up to max_ahead: what
 * it fetched and did not read never exceeds what it read. */
static void read_ahead_matches_what_was_read(void)
{
    planner_streams streams;
    planner_streams_init(&streams);
    planner_file plain = {.size = 256 * MIB};
    int asks = read_in_order(&streams, &plain, 0, 160 * MIB, 128 * KIB, as_much_as_read, NULL);
    CHECK(asks > 10);
    planner_streams_init(&streams);   /* and in reads that are not page multiples */
    asks = read_in_order(&streams, &plain, 12345, 12345 + 40 * MIB, 100000, as_much_as_read, NULL);
    CHECK(asks > 10);
}

/* Two readers of one handle a little apart (torch splits a tensor between threads): each goes
 * on with its own stream, and the one behind keeps earning read-ahead even once it comes
 * within reach of the other's. */
static void nearby_readers_keep_their_streams(void)
{
    planner_streams streams;
    planner_streams_init(&streams);
    planner_file plain = {.size = 256 * MIB};
    uint64_t chunk = 128 * KIB, ahead_start = 3 * MIB + 512 * KIB;
    read_plan plan;
    planner_plan_read(&streams, &plain, &config, ahead_start, chunk, &plan);   /* the other thread */
    uint64_t asked = 0;
    for (uint64_t at = 0; at < 24 * MIB; at += chunk) {
        planner_plan_read(&streams, &plain, &config, at, chunk, &plan);
        if (plan.ahead.end > plan.ahead.begin)
            asked = plan.ahead.end;
        uint64_t end = at + chunk, earned = as_much_as_read(NULL, end, end, 2) - end;
        if (at > 0)
            CHECK(asked - end >= earned / 2);   /* half of what it earned, at least, asked ahead */
    }
}

/* Data right after a header shorter than the probe is data: a stream reading on through it
 * earns read-ahead there. */
static void data_after_a_short_header(void)
{
    st_tensor_spec specs[] = {{"a", 16 * KIB}, {"b", 16 * KIB}, {"c", 16 * KIB}, {"d", 16 * KIB}, {"e", 4 * MIB}};
    test_file f;
    test_file_init(&f, specs, 5, 8192);
    CHECK_EQ_INT(f.header.header_end, 8192);
    planner_streams streams;
    planner_streams_init(&streams);
    uint64_t chunk = 8 * KIB, asked = 0;
    for (uint64_t at = 8192; at < 56 * KIB; at += chunk) {
        read_plan plan = plan_read(&f, &streams, at, chunk);
        asked = plan.ahead.end > asked ? plan.ahead.end : asked;
    }
    CHECK(asked >= 56 * KIB + (56 * KIB - 8192) / 2);
    test_file_clear(&f);
}

static void header_reads_fetch_the_header(void)
{
    test_file f;
    test_model_init(&f, 3, LAYOUT_BY_NAME);
    planner_file unknown = {.size = f.file.size, .is_safetensors = true};
    planner_streams streams;
    planner_streams_init(&streams);
    read_plan plan;
    for (int i = 0; i < 3; i++) {   /* the length field, then the JSON in pieces */
        uint64_t offset = i == 0 ? 0 : 8 + (uint64_t)(i - 1) * 4096;
        planner_plan_read(&streams, &unknown, &config, offset, i == 0 ? 8 : 4096, &plan);
        CHECK(plan.demand.begin == offset && plan.demand.end == config.header_probe);
        CHECK(plan.ahead.end == plan.ahead.begin && plan.prefetch_count == 0);
    }
    planner_file tiny = {.size = 1000, .is_safetensors = true};
    planner_plan_read(&streams, &tiny, &config, 0, 8, &plan);
    CHECK(plan.demand.begin == 0 && plan.demand.end == 1000);

    /* Known: to the header's end, whether shorter or longer than the probe, and no further. */
    planner_file known_small = f.file;
    CHECK(known_small.header_end < config.header_probe);
    planner_streams_init(&streams);
    for (int i = 0; i < 4; i++) {
        planner_plan_read(&streams, &known_small, &config, (uint64_t)i * 1024, 1024, &plan);
        CHECK(plan.demand.begin == (uint64_t)i * 1024 && plan.demand.end == known_small.header_end);
        CHECK(plan.ahead.end == plan.ahead.begin && plan.prefetch_count == 0);
    }
    planner_file known_large = {.size = 64 * MIB, .is_safetensors = true, .header_end = 300 * KIB};
    planner_streams_init(&streams);
    for (uint64_t at = 0; at < 256 * KIB; at += 64 * KIB) {
        planner_plan_read(&streams, &known_large, &config, at, 64 * KIB, &plan);
        CHECK(plan.demand.begin == at && plan.demand.end == 300 * KIB);
        CHECK(plan.ahead.end == plan.ahead.begin);
    }

    /* The kernel's read-ahead runs two 64 KiB windows past a header its reader stopped at:
     * that earns no data read-ahead. A reader going on well past it (cat) earns it. */
    planner_file header_then_data = {.size = 64 * MIB, .is_safetensors = true, .header_end = 100 * KIB};
    planner_streams_init(&streams);
    uint64_t at = 0;
    for (; at < 100 * KIB + 128 * KIB; at += 64 * KIB) {
        planner_plan_read(&streams, &header_then_data, &config, at, 64 * KIB, &plan);
        CHECK(plan.ahead.end == plan.ahead.begin);
    }
    uint64_t asked = 0;
    for (; at < MIB; at += 64 * KIB) {
        planner_plan_read(&streams, &header_then_data, &config, at, 64 * KIB, &plan);
        asked = plan.ahead.end > asked ? plan.ahead.end : asked;
    }
    CHECK(asked > MIB);
    CHECK_EQ_INT(marked_bytes(f.fetched, f.pages), 0);
    test_file_clear(&f);
}

/* A reader that starts at a tensor's first byte earns the rest of the tensor once it has read
 * TENSOR_EVIDENCE (or half the tensor, if less): a touch of the first windows is not reading on.
 * A reader that starts inside a tensor (one rank's slice) earns nothing before it has read
 * SLICE_AFTER (the kernel's own read-ahead covers short slices), then a sixteenth of what it
 * read. Neither reaches past the tensor's end until its reads cross it; then the stream is a
 * plain sequential reader. */
#define TENSOR_EVIDENCE (512 * KIB)   /* planner.c's TENSOR_EVIDENCE_BYTES */
#define SLICE_AFTER (4 * MIB)         /* planner.c's SLICE_AHEAD_AFTER */

typedef struct tensor_reading {
    const tensor_extent *tensor;
    uint64_t start;              /* of the stream */
} tensor_reading;

static uint64_t earned_in_tensor(const void *context, uint64_t end, uint64_t read_so_far, int reads)
{
    const tensor_reading *r = context;
    const tensor_extent *t = r->tensor;
    if (end > t->end)
        return as_much_as_read(NULL, end, read_so_far, reads);
    uint64_t size = t->end - t->begin, earned = 0;
    if (r->start == t->begin && reads >= 2 && read_so_far >= (TENSOR_EVIDENCE < size / 2 ? TENSOR_EVIDENCE : size / 2))
        earned = t->end - end;
    if (r->start != t->begin && reads >= 2 && read_so_far >= SLICE_AFTER)
        earned = read_so_far / 16;
    earned = earned < config.max_ahead ? earned : config.max_ahead;
    return end + earned < t->end ? end + earned : t->end;
}

static void read_tensor_in_order(test_file *f, const tensor_extent *t, uint64_t start, uint64_t to, uint64_t chunk,
                                 int expected_asks)
{
    planner_streams streams;
    planner_streams_init(&streams);
    tensor_reading reading = {t, start};
    int asks = read_in_order(&streams, &f->file, start, to, chunk, earned_in_tensor, &reading);
    if (expected_asks >= 0)
        CHECK_EQ_INT(asks, expected_asks);
}

static void tensor_and_slice_readers(void)
{
    test_file f;
    test_model_init(&f, 3, LAYOUT_BY_NAME);
    const tensor_extent *gate = &f.map->tensors[layer_tensor(&f, 1, "mlp.gate_proj")];
    read_tensor_in_order(&f, gate, gate->begin, gate->end, 128 * KIB, 1);   /* the rest, at once */
    const tensor_extent *k = &f.map->tensors[layer_tensor(&f, 1, "self_attn.k_proj")];
    read_tensor_in_order(&f, k, k->begin, k->end + 8 * MIB, 128 * KIB, -1);   /* and on past it */
    test_file_clear(&f);

    /* The first tensor, right after a page-aligned header shorter than the probe, in small reads;
     * a tensor smaller than twice the evidence; one larger than max_ahead. */
    st_tensor_spec specs[] = {{"first", 1 * MIB}, {"small", 768 * KIB}, {"huge", 3 * config.max_ahead},
                              {"sliced", 16 * MIB}, {"after", 64 * MIB}};
    test_file_init(&f, specs, 5, 4096);
    const tensor_extent *first = &f.map->tensors[0];
    CHECK(first->begin == f.header.header_end && first->begin < config.header_probe);
    read_tensor_in_order(&f, first, first->begin, first->end, 16 * KIB, 1);
    read_tensor_in_order(&f, &f.map->tensors[1], f.map->tensors[1].begin, f.map->tensors[1].end, 128 * KIB, 1);
    const tensor_extent *huge = &f.map->tensors[2];
    read_tensor_in_order(&f, huge, huge->begin, huge->begin + 2 * config.max_ahead, 1 * MIB, -1);

    const tensor_extent *sliced = &f.map->tensors[3];
    read_tensor_in_order(&f, sliced, sliced->begin + 5 * MIB + 4 * PAGE, sliced->end, 128 * KIB, -1);
    read_tensor_in_order(&f, sliced, sliced->begin + 5 * MIB, sliced->end + 4 * MIB, 128 * KIB, -1);
    read_tensor_in_order(&f, sliced, sliced->begin + 5 * MIB, sliced->begin + 5 * MIB + SLICE_AFTER - 128 * KIB, 128 * KIB, 0);
    test_file_clear(&f);
}

/* A rank's slices, one tensor after the other through one handle, in 64 KiB reads (what mmap
 * faults ask): once two slices had one share of their tensors (rows [3/8, 4/8)), a slice that
 * starts at that share of the next tensor is fetched to its end with its first read, and no
 * further; a slice at another share, or after two slices that disagree, is not. */
static void read_range(test_file *f, planner_streams *streams, uint64_t from, uint64_t to)
{
    for (uint64_t at = from; at < to; at += 64 * KIB)
        plan_read(f, streams, at, to - at < 64 * KIB ? to - at : 64 * KIB);
}

static uint64_t share_begin(const tensor_extent *t, uint64_t k, uint64_t n)
{
    return t->begin + (t->end - t->begin) * k / n;
}

static uint64_t first_read_reach(test_file *f, planner_streams *streams, const tensor_extent *t, uint64_t k,
                                 uint64_t n)
{
    read_plan plan = plan_read(f, streams, share_begin(t, k, n), 64 * KIB);
    return plan.ahead.end > plan.ahead.begin ? plan.ahead.end : plan.demand.end;
}

static void read_share(test_file *f, planner_streams *streams, const tensor_extent *t, uint64_t k, uint64_t n)
{
    read_range(f, streams, share_begin(t, k, n), share_begin(t, k + 1, n));
}

static void a_ranks_share_is_learnt(void)
{
    st_tensor_spec specs[] = {{"a", 8 * MIB}, {"b", 12 * MIB}, {"c", 8 * MIB}, {"d", 16 * MIB}, {"e", 8 * MIB},
                              {"f", 8 * MIB}, {"small", 1 * MIB}};
    test_file f;
    test_file_init(&f, specs, 7, 4096);
    const tensor_extent *t = f.map->tensors;
    planner_streams streams;
    planner_streams_init(&streams);
    read_share(&f, &streams, &t[0], 3, 8);
    CHECK_EQ_INT(first_read_reach(&f, &streams, &t[1], 3, 8), share_begin(&t[1], 3, 8) + 64 * KIB);   /* one: no lesson */
    read_range(&f, &streams, share_begin(&t[1], 3, 8) + 64 * KIB, share_begin(&t[1], 4, 8));
    CHECK_EQ_INT(first_read_reach(&f, &streams, &t[3], 3, 8), share_begin(&t[3], 4, 8));   /* the whole share */
    read_range(&f, &streams, share_begin(&t[3], 3, 8) + 64 * KIB, share_begin(&t[3], 4, 8));
    read_share(&f, &streams, &t[6], 3, 8);   /* a share too small to tell: the lesson stands */
    memset(f.fetched, 0, f.pages);
    CHECK_EQ_INT(first_read_reach(&f, &streams, &t[2], 3, 8), share_begin(&t[2], 4, 8));
    CHECK_EQ_INT(marked_bytes(f.fetched, f.pages), share_begin(&t[2], 4, 8) - share_begin(&t[2], 3, 8));
    read_range(&f, &streams, share_begin(&t[2], 3, 8) + 64 * KIB, share_begin(&t[2], 4, 8));
    /* Another share of the next tensor: nothing predicted for it; it teaches the new share. */
    CHECK_EQ_INT(first_read_reach(&f, &streams, &t[4], 5, 8), share_begin(&t[4], 5, 8) + 64 * KIB);
    read_range(&f, &streams, share_begin(&t[4], 5, 8) + 64 * KIB, share_begin(&t[4], 6, 8));
    CHECK_EQ_INT(first_read_reach(&f, &streams, &t[5], 3, 8), share_begin(&t[5], 3, 8) + 64 * KIB);
    test_file_clear(&f);
}

/* ---- the learned order ---------------------------------------------------------------------- */

/* Tensors t00..t15 of 3 MiB, name t<i> at file position 5i mod 16: no two tensors next to each
 * other in name order are next to each other in the file, so the two orders tell apart. */
#define SHUFFLED 16

static void shuffled_file_init(test_file *f)
{
    static char names[SHUFFLED][8];
    st_tensor_spec specs[SHUFFLED];
    for (int i = 0; i < SHUFFLED; i++) {
        snprintf(names[i], sizeof names[i], "t%02d", i);
        specs[i * 5 % SHUFFLED] = (st_tensor_spec){names[i], 3 * MIB};
    }
    test_file_init(f, specs, SHUFFLED, 4096);
}

/* Reads tensors whole, each through a handle of its own (a loader with a handle or a process
 * per tensor group), in the order given; every one after the first two must have been predicted,
 * and the predictions must come in that order. */
static void check_order_learned(test_file *f, const size_t *order, size_t count)
{
    planner_streams streams;
    for (size_t i = 0; i < count; i++) {
        if (i >= 2)
            CHECK(prefetch_position(f, order[i]) != SIZE_MAX);
        planner_streams_init(&streams);
        read_tensor(f, &streams, order[i], 512 * KIB);
        if (i == 0)
            CHECK_EQ_INT(f->prefetch_count, 0);   /* one tensor is no order */
    }
    CHECK(f->prefetch_count >= count - 2);
    for (size_t i = 0; i < f->prefetch_count && i + 2 < SHUFFLED; i++)
        CHECK_EQ_INT(f->prefetched[i], order[i + 2]);
}

static void file_order_is_learned(void)
{
    test_file f;
    shuffled_file_init(&f);
    size_t order[SHUFFLED];
    for (size_t i = 0; i < SHUFFLED; i++)
        order[i] = i;
    check_order_learned(&f, order, 8);
    test_file_clear(&f);
}

static void name_order_is_learned(void)
{
    test_file f;
    shuffled_file_init(&f);
    size_t order[SHUFFLED];
    for (size_t i = 0; i < SHUFFLED; i++)
        order[i] = f.map->by_name[i];
    CHECK(strcmp(f.map->tensors[order[1]].name, "t01") == 0 && order[1] == 5);
    check_order_learned(&f, order, 8);
    test_file_clear(&f);
}

/* Large tensors big_a..big_p shuffled in the file as above, each followed in name order by a
 * small one (big_a_norm: too small to count as a visit) kept at the file's end: a loader going
 * through keys() in name order (safe_open, load_file) steps over a small tensor from each large
 * one to the next. No digits in the names: no layer analogy to lean on. */
static void name_order_across_small_tensors(void)
{
    static char names[2 * SHUFFLED][16];
    st_tensor_spec specs[2 * SHUFFLED];
    for (int i = 0; i < SHUFFLED; i++) {
        snprintf(names[i], sizeof names[i], "big_%c", 'a' + i);
        snprintf(names[SHUFFLED + i], sizeof names[SHUFFLED + i], "big_%c_norm", 'a' + i);
        specs[i * 5 % SHUFFLED] = (st_tensor_spec){names[i], 3 * MIB};
        specs[SHUFFLED + i] = (st_tensor_spec){names[SHUFFLED + i], 8 * KIB};
    }
    test_file f;
    test_file_init(&f, specs, 2 * SHUFFLED, 4096);
    size_t order[SHUFFLED];
    for (size_t i = 0; i < SHUFFLED; i++)
        order[i] = f.map->by_name[2 * i];
    CHECK(strcmp(f.map->tensors[order[1]].name, "big_b") == 0);
    planner_streams streams;
    size_t learnt_at = 0;
    for (size_t i = 0; i < 10; i++) {
        if (i >= 4)   /* predicted before it is read */
            CHECK(prefetch_position(&f, order[i]) != SIZE_MAX);
        planner_streams_init(&streams);
        read_tensor(&f, &streams, order[i], 512 * KIB);
        if (i == 2)
            learnt_at = f.prefetch_count;
    }
    /* From the third visit on, the large tensors handed out come in name order. */
    size_t expected = 3;
    for (size_t i = learnt_at; i < f.prefetch_count; i++) {
        if (f.map->tensors[f.prefetched[i]].end - f.map->tensors[f.prefetched[i]].begin < MIB)
            continue;
        while (expected < SHUFFLED && prefetch_position(&f, order[expected]) < learnt_at)
            expected++;   /* handed out before the order was known */
        CHECK(expected < SHUFFLED && f.prefetched[i] == order[expected]);
        expected++;
    }
    CHECK(expected >= 8);
    test_file_clear(&f);
}

static const char *const module_order[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                           "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                           "mlp.down_proj"};
#define MODULE_ROLES (sizeof module_order / sizeof module_order[0])

/* (layer, position in module_order) of a layer tensor; -1 for others. */
static int module_position(const test_file *f, size_t index)
{
    int layer = -1;
    char role[64];
    if (sscanf(f->map->tensors[index].name, "model.layers.%d.%63[a-z_.]", &layer, role) != 2)
        return -1;
    size_t length = strlen(role);
    if (length > 7 && strcmp(role + length - 7, ".weight") == 0)
        role[length - 7] = '\0';
    for (size_t r = 0; r < MODULE_ROLES; r++)
        if (strcmp(role, module_order[r]) == 0)
            return layer * (int)MODULE_ROLES + (int)r;
    return -1;
}

/* Whether the tensors handed out for prefetch from the first'th on come in the order position
 * gives them (tensors it gives no position, such as norms read in one read, are left aside). */
static void check_prefetched_in_order(const test_file *f, size_t first, int (*position_of)(const test_file *, size_t))
{
    int previous = -1;
    for (size_t i = first; i < f->prefetch_count; i++) {
        int position = position_of(f, f->prefetched[i]);
        if (position < 0)
            continue;
        CHECK(position > previous);
        previous = position;
    }
}

/* Bytes of the tensors handed out whole for prefetch that nobody has read. */
static uint64_t unread_prefetched(const test_file *f)
{
    uint64_t bytes = 0;
    for (size_t t = 0; t < f->map->count; t++) {
        if (prefetch_position(f, t) == SIZE_MAX)
            continue;
        for (uint64_t at = f->map->tensors[t].begin; at < f->map->tensors[t].end; at += PAGE)
            bytes += f->read[at / PAGE] ? 0 : PAGE;
    }
    return bytes;
}

/* One handle reading each layer's tensors in the order its module uses them, from a file sorted
 * by name. After the first layer (where no order is known yet and the file is prefetched in
 * file order), each layer's tensors are predicted from the previous layer's order: every
 * prefetch comes in module order, and every tensor from layer 2 on is prefetched before it is
 * read. Whatever predicted them, what is prefetched and unread stays within the window (and
 * the window within twice what was read whole plus first_prefetch). */
#define MODULE_LAYERS 8

static void module_order_is_learned_by_layer(void)
{
    test_file f;
    test_model_init(&f, MODULE_LAYERS, LAYOUT_BY_NAME);
    planner_streams streams;
    planner_streams_init(&streams);
    size_t after_first_layer = 0;
    uint64_t whole = 0;
    for (int layer = 0; layer < MODULE_LAYERS; layer++) {
        if (layer == 1)
            after_first_layer = f.prefetch_count;
        for (size_t r = 0; r < MODULE_ROLES; r++) {
            size_t t = layer_tensor(&f, layer, module_order[r]);
            if (layer >= 2)
                CHECK(prefetch_position(&f, t) != SIZE_MAX);
            read_tensor(&f, &streams, t, 512 * KIB);
            whole += f.map->tensors[t].end - f.map->tensors[t].begin;
            uint64_t window = f.order.window;
            CHECK(window <= config.first_prefetch + 2 * whole && window <= config.max_ahead);
            CHECK(unread_prefetched(&f) <= window + 3 * MIB);   /* the last tensor may reach past */
        }
    }
    CHECK(f.prefetch_count > after_first_layer + 20);
    check_prefetched_in_order(&f, after_first_layer, module_position);
    test_file_clear(&f);
}

/* A shard holding layers first..first+count-1 in name order (as the safetensors package writes
 * each shard of a checkpoint: layers.10 before layers.8), with no embedding or head. */
static void test_shard_init(test_file *f, int first, int count)
{
    model_spec model;
    model.count = 0;
    char name[96];
    for (int layer = first; layer < first + count; layer++)
        for (int r = 0; r < MODEL_ROLES; r++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", layer, model_roles[r].role);
            model_add(&model, model_roles[r].size, name);
        }
    qsort(model.tensors, model.count, sizeof model.tensors[0], st_spec_by_name);
    test_file_init(f, model.tensors, model.count, 4096);
}

/* Reads layers in module order; returns how many of the tensors read had been handed out for
 * prefetch before their first byte was read. */
static size_t read_layers_in_module_order(test_file *f, int first, int count)
{
    planner_streams streams;
    planner_streams_init(&streams);
    size_t predicted = 0;
    for (int layer = first; layer < first + count; layer++)
        for (size_t r = 0; r < MODULE_ROLES; r++) {
            size_t t = layer_tensor(f, layer, module_order[r]);
            predicted += prefetch_position(f, t) != SIZE_MAX;
            read_tensor(f, &streams, t, 512 * KIB);
        }
    return predicted;
}

/* The layer pattern learnt in one shard is the repo's: in the next shard (the next layers, stored
 * in name order), every tensor after the first is prefetched before it is read, in module order,
 * where a shard that must learn the order itself has its first layer's tensors read unpredicted;
 * and the next shard's bulk start hands out its lowest layer's tensors in module order. */
#define SHARD_LAYERS 6

static void the_layer_pattern_carries_to_the_next_shard(void)
{
    planner_pattern *pattern = calloc(1, sizeof *pattern);
    CHECK(pattern != NULL);
    test_file first, next, alone, bulk;
    test_shard_init(&first, 0, SHARD_LAYERS);
    test_shard_init(&next, SHARD_LAYERS, SHARD_LAYERS);
    test_shard_init(&alone, SHARD_LAYERS, SHARD_LAYERS);
    test_shard_init(&bulk, SHARD_LAYERS, SHARD_LAYERS);
    first.file.repo_pattern = next.file.repo_pattern = pattern;

    read_layers_in_module_order(&first, 0, SHARD_LAYERS);
    CHECK_EQ_INT((int)pattern->role_count, (int)MODULE_ROLES);
    CHECK_EQ_INT((int)pattern->layer_step, 1);
    char name[96];
    for (size_t r = 0; r < MODULE_ROLES && r < pattern->role_count; r++) {
        const planner_role *role = &pattern->roles[r];
        snprintf(name, sizeof name, "%.*s%d%s", (int)role->number_at, role->rest, 3, role->rest + role->number_at);
        CHECK_EQ_INT((int)layer_tensor(&first, 3, module_order[r]), (int)tensor(&first, name));
    }

    size_t tensors = SHARD_LAYERS * MODULE_ROLES;
    CHECK_EQ_INT((int)read_layers_in_module_order(&next, SHARD_LAYERS, SHARD_LAYERS), (int)tensors - 1);
    check_prefetched_in_order(&next, 0, module_position);
    size_t unpredicted = tensors - read_layers_in_module_order(&alone, SHARD_LAYERS, SHARD_LAYERS);
    CHECK(unpredicted >= MODULE_ROLES);   /* its first layer at least: the reference */

    plan_range ranges[MODULE_ROLES];
    size_t handed = planner_order_bulk(&bulk.order, pattern, UINT64_MAX, ranges, MODULE_ROLES);
    CHECK_EQ_INT((int)handed, (int)MODULE_ROLES);
    for (size_t r = 0; r < handed; r++)
        CHECK_EQ_INT((int)tensor_map_find(bulk.map, ranges[r].begin), (int)layer_tensor(&bulk, SHARD_LAYERS, module_order[r]));
    test_file_clear(&first);
    test_file_clear(&next);
    test_file_clear(&alone);
    test_file_clear(&bulk);
    free(pattern);
}

/* Layer numbers written with leading zeros (blk.07) are layer numbers too: layers read in an
 * order that is neither the file's nor the names' (c, a, b) teach it to the layers after. */
#define PADDED_LAYERS 12
static const char padded_roles[] = "cab";   /* the order they are read in */

static int padded_position(const test_file *f, size_t index)
{
    int layer;
    char role;
    if (sscanf(f->map->tensors[index].name, "blk.%d.%c", &layer, &role) != 2 || !strchr(padded_roles, role))
        return -1;
    return layer * 3 + (int)(strchr(padded_roles, role) - padded_roles);
}

static void zero_padded_layers(void)
{
    static char names[3 * PADDED_LAYERS][16];
    st_tensor_spec specs[3 * PADDED_LAYERS];
    for (int i = 0; i < 3 * PADDED_LAYERS; i++) {
        snprintf(names[i], sizeof names[i], "blk.%02d.%c", i / 3, "abc"[i % 3]);
        specs[i] = (st_tensor_spec){names[i], 3 * MIB};
    }
    test_file f;
    test_file_init(&f, specs, 3 * PADDED_LAYERS, 4096);
    planner_streams streams;
    size_t after_first_layer = 0;
    for (int layer = 0; layer < PADDED_LAYERS; layer++) {
        if (layer == 1)
            after_first_layer = f.prefetch_count;
        for (int r = 0; r < 3; r++) {
            char name[16];
            snprintf(name, sizeof name, "blk.%02d.%c", layer, padded_roles[r]);
            if (layer >= 2)
                CHECK(prefetch_position(&f, tensor(&f, name)) != SIZE_MAX);
            planner_streams_init(&streams);
            read_tensor(&f, &streams, tensor(&f, name), 512 * KIB);
        }
    }
    CHECK(f.prefetch_count > after_first_layer + 10);
    check_prefetched_in_order(&f, after_first_layer, padded_position);
    test_file_clear(&f);
}

/* A model of the given layers whose header a reader has just read: the state a toucher starts in. */
static void model_with_header_read(test_file *f, int layers, model_layout layout, planner_streams *streams)
{
    test_model_init(f, layers, layout);
    planner_streams_init(streams);
    plan_read(f, streams, 0, 64 * KIB);
}

/* Touches of each tensor's first byte only, as a meta-device load or a shape probe through mmap
 * does: a page the kernel's cache lacks faults, and the fault reads the missing pages of a
 * window around it (window PAGE: the page alone, as with MADV_RANDOM). They earn no read-ahead,
 * no tensor data is prefetched, no tensor counts as read: what is fetched beyond what is read
 * is at most the first bytes of the tensors the toucher goes on to. */
/* Touches each tensor's first page in the order given, reading window bytes around it as the
 * kernel does; returns how many touches found that page fetched already (predicted). */
static size_t touch_each_tensor(test_file *f, planner_streams *streams, const size_t *order, uint64_t window)
{
    size_t predicted = 0;
    for (size_t i = 0; i < f->map->count; i++) {
        uint64_t fault = f->map->tensors[order[i]].begin / PAGE * PAGE;
        if (f->read[fault / PAGE])
            continue;
        predicted += f->fetched[fault / PAGE];
        uint64_t from = fault > window / 2 ? fault - window / 2 : 0, to = from + (window > PAGE ? window : PAGE);
        to = to < f->file.size ? to : f->file.size;
        for (uint64_t at = from; at < to;) {
            if (f->read[at / PAGE]) {
                at += PAGE;
                continue;
            }
            uint64_t run_end = at;
            while (run_end < to && !f->read[run_end / PAGE])
                run_end += PAGE;
            read_plan plan = plan_read(f, streams, at, run_end - at);
            CHECK(plan.ahead.end == plan.ahead.begin && plan.rest.end == plan.rest.begin);
            at = run_end;
        }
    }
    return predicted;
}

static void touches_fetch_no_tensor_data(void)
{
    /* 0-2: file order is name order, touched a page (2: then the next page) or 128 KiB around;
     * 3, 4: layers stored in module order, touched in name order (a state dict's keys), a page or
     * 128 KiB around (transformers on the meta device: the read around a head reaches the tail
     * of the tensor before it; eight layers: the order must hold from layer to layer). */
    for (int variant = 0; variant < 5; variant++) {
        test_file f;
        planner_streams streams;
        model_with_header_read(&f, variant == 4 ? 8 : 3, variant < 3 ? LAYOUT_BY_NAME : LAYOUT_MODULE_ORDER, &streams);
        size_t order[MODEL_MAX_TENSORS];
        for (size_t i = 0; i < f.map->count; i++)
            order[i] = variant >= 3 ? f.map->by_name[i] : i;
        size_t predicted = touch_each_tensor(&f, &streams, order, variant == 1 || variant == 4 ? 128 * KIB : PAGE);
        CHECK(predicted >= f.map->count / 2);   /* after a few touches, the heads come ahead */
        if (variant == 2) {   /* the page after each first page too, through another handle */
            planner_streams_init(&streams);
            for (size_t i = 0; i < f.map->count; i++)
                if (f.map->tensors[i].end - f.map->tensors[i].begin > PAGE)
                    plan_read(&f, &streams, f.map->tensors[i].begin + PAGE, PAGE);
        }
        uint64_t fetched_unread = 0;
        for (size_t p = 0; p < f.pages; p++)
            if (f.fetched[p] && !f.read[p]) {
                fetched_unread += PAGE;
                CHECK(near_a_head(f.map, p * PAGE));
            }
        CHECK(fetched_unread <= f.map->count * HEAD_REACH);
        /* Heads are what a touch reads: what they hold beyond it waits in memory, unread, until
         * the loader comes back for the tensor (384 KiB heads held 256 KiB each). */
        if (variant == 1 || variant == 4)
            CHECK(fetched_unread <= f.map->count * 96 * KIB);
        CHECK_EQ_INT(f.prefetch_count, 0);
        CHECK_EQ_INT(f.order.history_count, 0);
        printf("touches (variant %d): %llu KiB read, %llu KiB fetched, %zu heads prefetched, %zu of %zu touches predicted\n", variant,
               (unsigned long long)(marked_bytes(f.read, f.pages) >> 10),
               (unsigned long long)(marked_bytes(f.fetched, f.pages) >> 10), f.heads, predicted, f.map->count);
        test_file_clear(&f);
    }
}

/* Heads asked ahead of the touch, along name order. */
static size_t heads_ahead_of(const test_file *f, size_t name_position)
{
    size_t count = 0;
    for (size_t r = name_position + 1; r < f->map->count; r++)
        count += f->order.head_asked[f->map->by_name[r]];
    return count;
}

/* Touches one page at the first byte of each tensor in name order, from name position first on
 * (skipping pages already read); returns the most heads ever asked ahead of a touch. */
static size_t touch_in_name_order(test_file *f, planner_streams *streams, size_t first, size_t count)
{
    size_t most = 0;
    for (size_t r = first; r < first + count && r < f->map->count; r++) {
        uint64_t page = f->map->tensors[f->map->by_name[r]].begin / PAGE * PAGE;
        if (!f->read[page / PAGE])
            plan_read(f, streams, page, PAGE);
        size_t ahead = heads_ahead_of(f, r);
        most = ahead > most ? ahead : most;
    }
    return most;
}

/* A loader touches a head a millisecond after the last; a head comes a round trip later. The
 * longer the order holds, the further ahead heads are asked (16 of them at first would leave a
 * touch waiting every 16 over a 20 ms link), never past the touches to come. */
static void heads_ahead_grow_with_the_order(void)
{
    test_file f;
    planner_streams streams;
    model_with_header_read(&f, 13, LAYOUT_MODULE_ORDER, &streams);
    size_t early = touch_in_name_order(&f, &streams, 0, 10);
    size_t soon = touch_in_name_order(&f, &streams, 10, 20);
    size_t most = touch_in_name_order(&f, &streams, 30, f.map->count - 30);
    CHECK(early <= 16);
    CHECK(soon >= 64);   /* two dozen touches in: a round trip's worth of touches and more */
    CHECK(most >= 64);
    CHECK_EQ_INT(f.prefetch_count, 0);   /* heads only, no tensor data */
    printf("heads ahead: %zu after 10 touches, %zu after 30, at most %zu of %zu tensors\n", early, soon, most,
           f.map->count);
    test_file_clear(&f);
}

/* The kernel's window around a fault may start a page before half a window (HEAD_BEFORE): the
 * tensor beginning in the faulting page is still touched, and three such touches in file order
 * are an order, whose next heads come ahead. */
static void touch_windows_a_page_early(void)
{
    test_file f;
    planner_streams streams;
    model_with_header_read(&f, 3, LAYOUT_MODULE_ORDER, &streams);
    size_t touches = 0;
    for (size_t i = 0; i < f.map->count && touches < 4; i++) {
        const tensor_extent *t = &f.map->tensors[i];
        uint64_t fault = t->begin / PAGE * PAGE;
        if (t->end - t->begin <= 384 * KIB || fault < 64 * KIB + PAGE || f.read[fault / PAGE])
            continue;
        read_plan plan = plan_read(&f, &streams, fault - 64 * KIB - PAGE, 128 * KIB);
        CHECK(plan.touched);
        touches++;
    }
    CHECK_EQ_INT(touches, 4);
    CHECK(f.heads > 0);
    test_file_clear(&f);
}

/* A loader that touched one shard's tensors in name order goes on to the next shard: when the
 * repo's other files are being touched so, a touch in a file with no order of its own (its
 * first, or one out of order: transformers touches lm_head before the layers) already asks for
 * the heads that follow it. Without that, each shard's first touches wait a round trip each.
 * A header read that reaches the first tensor is no touch. */
static void repo_touching_starts_heads_at_once(void)
{
    for (int told = 0; told < 2; told++) {
        test_file f;
        test_model_init(&f, 3, LAYOUT_MODULE_ORDER);
        f.file.repo_touching = told ? TOUCHING_NAME_ORDER : TOUCHING_NONE;
        planner_streams streams;
        planner_streams_init(&streams);
        read_plan plan = plan_read(&f, &streams, 0, 64 * KIB);   /* the header, and the first tensor's head */
        CHECK(!plan.touched && f.heads == 0);
        size_t stray = f.map->by_name[f.map->count - 3], first = f.map->by_name[0];   /* lm_head */
        CHECK(f.map->tensors[stray].end - f.map->tensors[stray].begin > MIB);
        plan = plan_read(&f, &streams, f.map->tensors[stray].begin / PAGE * PAGE, PAGE);
        CHECK(plan.touched);
        plan = plan_read(&f, &streams, f.map->tensors[first].begin / PAGE * PAGE, PAGE);   /* out of order */
        CHECK(plan.touched);
        planner_touching expected = told ? TOUCHING_NAME_ORDER : TOUCHING_NONE;
        CHECK_EQ_INT(plan.touching, expected);
        size_t ahead = heads_ahead_of(&f, 0);   /* after lm_head: the model's tensors in name order */
        /* The repo's order is proven: as many heads at once as one plan holds, not the 16 a
         * file's own first touches earn. */
        size_t most_at_once = f.map->count - 1 < PLAN_MAX_PREFETCH ? f.map->count - 1 : PLAN_MAX_PREFETCH;
        printf("repo touching told=%d: %zu heads ahead of %zu tensors\n", told, ahead, f.map->count);
        CHECK(told ? ahead >= most_at_once : ahead == 0 && f.heads == 0);
        test_file_clear(&f);
    }
}

/* The prefetch window grows as tensors are read whole along the predicted order, up to
 * max_ahead, and never past twice what was read whole plus first_prefetch: a reader that stops
 * leaves at most that much prefetched and unread. Tensors read in file order, each through its
 * own handle. */
static void prefetch_window(void)
{
    char names[25][16];
    st_tensor_spec specs[25];
    for (int i = 0; i < 25; i++) {
        snprintf(names[i], sizeof names[i], i ? "block.%d" : "head", i);
        specs[i] = (st_tensor_spec){names[i], 3 * MIB};
    }
    test_file f;
    test_file_init(&f, specs, 25, 4096);
    planner_streams streams;
    uint64_t whole = 0, previous_window = 0;
    for (size_t index = 1; index <= 12; index++) {
        if (index > 2)
            CHECK(prefetch_position(&f, index) != SIZE_MAX);   /* predicted */
        planner_streams_init(&streams);
        read_tensor(&f, &streams, index, 512 * KIB);
        whole += 3 * MIB;
        uint64_t window = f.order.window, bound = config.first_prefetch + 2 * whole;
        CHECK(window > 0 && window <= config.max_ahead && window <= bound && window >= previous_window);
        previous_window = window;
        /* Handed out: the next tensors along file order, each once, reaching no further past
         * this one than the window (and the last tensor it reaches into). */
        for (size_t i = 0; i < f.prefetch_count; i++)
            CHECK_EQ_INT(f.prefetched[i], 3 + i);
        size_t last = f.prefetch_count ? f.prefetched[f.prefetch_count - 1] : index;
        if (index >= 2)
            CHECK(last > index && (last - index - 1) * 3 * MIB < window);
    }
    CHECK_EQ_INT(f.order.window, config.max_ahead);
    CHECK(prefetch_position(&f, 0) == SIZE_MAX);   /* never behind the reader */
    test_file_clear(&f);
}

/* A file of count tensors of 3 MiB ("block.N"), read with a prefetch window of max_prefetch;
 * by_name: named in the reverse of file order, so that name order is not file order. */
static const planner_config shared_budget = {.max_ahead = 32 * MIB, .header_probe = 64 * KIB,
                                             .first_prefetch = 4 * MIB, .max_prefetch = 8 * MIB};

static void blocks_file_init(test_file *f, size_t count, bool by_name)
{
    static char names[64][32];
    st_tensor_spec specs[64];
    CHECK(count <= 64);
    for (size_t i = 0; i < count; i++) {
        snprintf(names[i], sizeof names[i], "block.%02zu", by_name ? count - 1 - i : i);
        specs[i] = (st_tensor_spec){names[i], 3 * MIB};
    }
    test_file_init(f, specs, count, 4096);
    f->config = &shared_budget;
}

/* Reads the tensors of name rank from to to (by_name) or of file index from to to, each whole
 * through a handle of its own. */
static void read_whole_tensors(test_file *f, size_t from, size_t to, bool by_name)
{
    planner_streams streams;
    for (size_t k = from; k <= to; k++) {
        planner_streams_init(&streams);
        read_tensor(f, &streams, by_name ? f->map->by_name[k] : k, 512 * KIB);
    }
}

/* Past max_prefetch only on evidence: CONFIDENT_PREDICTIONS (8) whole tensors in a row that the
 * order had predicted, room in the memory budget, and an order other than the file's (a reader
 * along file order has its stream's read-ahead); a tensor read out of the order takes the window
 * back. Name ranks 1 and 2 teach the order, 3.. are predicted: the eighth is rank 10. */
static void window_grows_with_confidence_and_room(void)
{
    test_file f;
    blocks_file_init(&f, 40, true);
    f.file.memory_room = 1024 * MIB;
    read_whole_tensors(&f, 1, 9, true);
    CHECK_EQ_INT(f.order.window, shared_budget.max_prefetch);
    read_whole_tensors(&f, 10, 12, true);
    CHECK_EQ_INT(f.order.window, 2 * shared_budget.max_prefetch);
    /* Handed out ahead of rank 12: more than max_prefetch's worth (2 tensors and a part). */
    CHECK(f.prefetch_count && f.map->tensors[f.prefetched[f.prefetch_count - 1]].name_rank >= 12 + 4);
    read_whole_tensors(&f, 30, 30, true);   /* never predicted: the order broke */
    CHECK_EQ_INT(f.order.window, shared_budget.max_prefetch);
    test_file_clear(&f);

    blocks_file_init(&f, 40, true);
    f.file.memory_room = shared_budget.max_prefetch - 1;   /* other files' prefetch holds the rest */
    read_whole_tensors(&f, 1, 14, true);
    CHECK_EQ_INT(f.order.window, shared_budget.max_prefetch);
    test_file_clear(&f);

    blocks_file_init(&f, 40, false);
    f.file.memory_room = 1024 * MIB;
    read_whole_tensors(&f, 1, 14, false);   /* predicted all along, but in file order */
    CHECK_EQ_INT(f.order.window, shared_budget.max_prefetch);
    test_file_clear(&f);
}

/* A tensor handed out for prefetch that the fs found no memory for is handed out again (before
 * the tensors after it) and no longer counts against the window as prefetched and unread. */
static void refused_prefetch_is_handed_out_again(void)
{
    test_file f;
    blocks_file_init(&f, 20, false);
    /* After 2: 3, 4, 5 (the window, 8 MiB, covered); after 3: 6. */
    read_whole_tensors(&f, 1, 3, false);
    CHECK_EQ_INT(f.prefetch_count, 4);
    CHECK_EQ_INT(f.prefetched[3], 6);
    const tensor_extent *refused = &f.map->tensors[6];
    planner_order_prefetch_refused(&f.order, (plan_range){refused->begin, refused->end});
    read_whole_tensors(&f, 4, 4, false);   /* 5 is unread (3 MiB): 6 comes again, before 7 */
    CHECK(f.prefetch_count >= 5);
    CHECK_EQ_INT(f.prefetched[4], 6);
    /* A range that is not a tensor's (a head) changes nothing: 7, handed out, stays so. */
    size_t before = f.prefetch_count;
    CHECK_EQ_INT(f.prefetched[before - 1], 7);
    planner_order_prefetch_refused(&f.order, (plan_range){f.map->tensors[7].begin + PAGE, f.map->tensors[7].end});
    read_whole_tensors(&f, 5, 6, false);
    CHECK(f.prefetch_count > before);
    for (size_t i = before; i < f.prefetch_count; i++)
        CHECK(f.prefetched[i] > 7);
    test_file_clear(&f);
}

int main(void)
{
    new_streams_fetch_their_read();
    read_ahead_matches_what_was_read();
    nearby_readers_keep_their_streams();
    data_after_a_short_header();
    header_reads_fetch_the_header();
    tensor_and_slice_readers();
    a_ranks_share_is_learnt();
    file_order_is_learned();
    name_order_is_learned();
    name_order_across_small_tensors();
    module_order_is_learned_by_layer();
    the_layer_pattern_carries_to_the_next_shard();
    zero_padded_layers();
    touches_fetch_no_tensor_data();
    heads_ahead_grow_with_the_order();
    touch_windows_a_page_early();
    repo_touching_starts_heads_at_once();
    prefetch_window();
    window_grows_with_confidence_and_room();
    refused_prefetch_is_handed_out_again();
    return check_finish("test_planner");
}
