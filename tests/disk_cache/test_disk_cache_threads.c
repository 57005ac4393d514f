/* Concurrency: 8 threads read and write overlapping blobs (and their prefixes) at once, first
 * under a cap small enough that blobs are evicted while others are in use, then across more
 * blobs than the cache keeps open, then with ranges of any offset and length over small units
 * (overlapping writes of the same units, reads of partly stored ranges). Every byte served must
 * be the generator's. Meant to run under ThreadSanitizer and AddressSanitizer as well. */
#include "check.h"
#include "dc_test_util.h"

#include <pthread.h>
#include <stdatomic.h>

enum { BS = 32 * 1024, THREADS = 8, PREFIX_MAX = 300 };

typedef struct shared_blob {
    char etag[65];
    uint64_t seed, size;
    disk_cache_blob_key key;
} shared_blob;

typedef struct phase {
    disk_cache *cache;
    shared_blob *blobs;
    int blob_count;
    int iterations;
    atomic_int wrong_bytes;
    atomic_int hits;
} phase;

typedef struct worker {
    phase *phase;
    uint64_t rng;
} worker;

enum { RANGE_UNIT = 4096, RANGE_MAX = 10 * RANGE_UNIT };

static void run_phase_with(phase *p, void *(*main_of)(void *));

/* A random range: read it; what is served must be the generator's; if not all of it, store it. */
static void range_step(phase *p, shared_blob *blob, uint64_t choice, uint8_t *buf, uint8_t *expected)
{
    uint64_t offset = (choice >> 8) % blob->size;
    size_t len = (size_t)((choice >> 40) % RANGE_MAX) + 1;
    if (len > blob->size - offset)
        len = (size_t)(blob->size - offset);
    fill_range(blob->seed, RANGE_UNIT, blob->size, offset, expected, len);
    if (choice % 7 == 0) {
        if (disk_cache_present_bytes(p->cache, &blob->key, offset, len) > len)
            atomic_fetch_add(&p->wrong_bytes, 1);
        return;
    }
    size_t served = disk_cache_read_range(p->cache, &blob->key, offset, buf, len);
    if (served > len || memcmp(buf, expected, served) != 0)
        atomic_fetch_add(&p->wrong_bytes, 1);
    if (served == len)
        atomic_fetch_add(&p->hits, 1);
    else
        disk_cache_write_range(p->cache, &blob->key, offset, expected, len);
}

/* Phase 4: the first readers of a huggingface_hub blob all arrive at once: one hashes it, the
 * others wait for its verdict, and every byte served is the blob's. */
enum { HF_BLOB_SIZE = 3 * 1024 * 1024 + 123 };

static void *hf_worker_main(void *arg)
{
    worker *self = arg;
    phase *p = self->phase;
    shared_blob *blob = &p->blobs[0];
    uint8_t *buf = malloc(RANGE_MAX), *expected = malloc(RANGE_MAX);
    for (int n = 0; n < p->iterations; n++) {
        uint64_t choice = splitmix64(&self->rng);
        uint64_t offset = (choice >> 8) % blob->size;
        size_t len = (size_t)((choice >> 40) % RANGE_MAX) + 1;
        if (len > blob->size - offset)
            len = (size_t)(blob->size - offset);
        if (choice % 5 == 0) {
            if (disk_cache_present_bytes(p->cache, &blob->key, offset, len) != len)
                atomic_fetch_add(&p->wrong_bytes, 1);
            continue;
        }
        fill_range(blob->seed, RANGE_UNIT, blob->size, offset, expected, len);
        size_t served = disk_cache_read_range(p->cache, &blob->key, offset, buf, len);
        if (served != len || memcmp(buf, expected, len) != 0)
            atomic_fetch_add(&p->wrong_bytes, 1);
        else
            atomic_fetch_add(&p->hits, 1);
    }
    free(buf);
    free(expected);
    return NULL;
}

static void test_hf_blob_first_readers(int scale)
{
    char dir[64], hub[64];
    make_scratch_dir(dir);
    make_scratch_dir(hub);
    shared_blob blob = {.seed = 1400, .size = HF_BLOB_SIZE};
    uint8_t *content = malloc(blob.size);
    fill_range(blob.seed, RANGE_UNIT, blob.size, 0, content, blob.size);
    make_hf_blob(hub, "models--org--hf", content, blob.size, blob.etag);
    blob.key = (disk_cache_blob_key){.etag = blob.etag, .size = blob.size, .hf_repo_folder = "models--org--hf"};
    phase hf = {.cache = open_test_cache(dir, RANGE_UNIT, 0, hub), .blobs = &blob, .blob_count = 1,
                .iterations = 100 * scale};
    run_phase_with(&hf, hf_worker_main);
    CHECK_EQ_INT(atomic_load(&hf.wrong_bytes), 0);
    CHECK(atomic_load(&hf.hits) > 0);
    disk_cache_counters counters;
    disk_cache_get_counters(hf.cache, &counters);
    CHECK_EQ_INT(counters.hf_blobs_verified, 1);
    CHECK_EQ_INT(counters.hf_blobs_rejected, 0);
    disk_cache_close(hf.cache);
    free(content);
    remove_tree(dir);
    remove_tree(hub);
}

static void *range_worker_main(void *arg)
{
    worker *self = arg;
    phase *p = self->phase;
    uint8_t *buf = malloc(RANGE_MAX), *expected = malloc(RANGE_MAX);
    for (int n = 0; n < p->iterations; n++) {
        shared_blob *blob = &p->blobs[splitmix64(&self->rng) % (uint64_t)p->blob_count];
        range_step(p, blob, splitmix64(&self->rng), buf, expected);
    }
    free(buf);
    free(expected);
    return NULL;
}

static size_t prefix_len(const shared_blob *blob)
{
    return 40 + (size_t)(blob->seed % 200);
}

static void *worker_main(void *arg)
{
    worker *self = arg;
    phase *p = self->phase;
    uint8_t *buf = malloc(BS), *expected = malloc(BS);
    for (int n = 0; n < p->iterations; n++) {
        shared_blob *blob = &p->blobs[splitmix64(&self->rng) % (uint64_t)p->blob_count];
        uint64_t choice = splitmix64(&self->rng);
        if (choice % 16 == 0) {
            size_t len = prefix_len(blob), got = 0;
            fill_block(blob->seed + 5555, 0, expected, len);
            if (choice % 32 == 0) {
                disk_cache_write_prefix(p->cache, &blob->key, expected, len);
            } else if (disk_cache_read_prefix(p->cache, &blob->key, buf, PREFIX_MAX, &got)) {
                if (got != len || memcmp(buf, expected, len) != 0)
                    atomic_fetch_add(&p->wrong_bytes, 1);
            }
            continue;
        }
        if (choice % 64 == 1) {
            if (disk_cache_cached_bytes(p->cache, &blob->key) > blob->size)
                atomic_fetch_add(&p->wrong_bytes, 1);
            continue;
        }
        uint64_t index = (choice >> 8) % block_count(blob->size, BS);
        size_t len = block_len(blob->size, BS, index);
        if (disk_cache_read_block(p->cache, &blob->key, index, buf, len)) {
            atomic_fetch_add(&p->hits, 1);
            if (!block_matches(blob->seed, index, buf, len))
                atomic_fetch_add(&p->wrong_bytes, 1);
        } else {
            fill_block(blob->seed, index, buf, len);
            disk_cache_write_block(p->cache, &blob->key, index, buf, len);
        }
    }
    free(buf);
    free(expected);
    return NULL;
}

static void run_phase_with(phase *p, void *(*main_of)(void *))
{
    pthread_t threads[THREADS];
    worker workers[THREADS];
    for (int t = 0; t < THREADS; t++) {
        workers[t] = (worker){.phase = p, .rng = (uint64_t)t * 1234567 + 1};
        pthread_create(&threads[t], NULL, main_of, &workers[t]);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(threads[t], NULL);
}

static void run_phase(phase *p)
{
    run_phase_with(p, worker_main);
}

/* After the range storm: whole-blob reads serve a right prefix, and what is present by the
 * index is what the accounting says. */
static void verify_ranges(disk_cache *cache, shared_blob *blobs, int count)
{
    uint64_t present_total = 0;
    int wrong = 0;
    for (int b = 0; b < count; b++) {
        uint8_t *buf = malloc(blobs[b].size);
        size_t served = disk_cache_read_range(cache, &blobs[b].key, 0, buf, blobs[b].size);
        wrong += !range_matches(blobs[b].seed, RANGE_UNIT, blobs[b].size, 0, buf, served);
        present_total += disk_cache_present_bytes(cache, &blobs[b].key, 0, blobs[b].size);
        uint64_t by_index = 0;   /* unit by unit */
        for (uint64_t unit = 0; unit * RANGE_UNIT < blobs[b].size; unit++)
            if (disk_cache_present_bytes(cache, &blobs[b].key, unit * RANGE_UNIT, 1))
                by_index += block_len(blobs[b].size, RANGE_UNIT, unit);
        CHECK_EQ_INT(by_index, disk_cache_present_bytes(cache, &blobs[b].key, 0, blobs[b].size));
        free(buf);
    }
    CHECK_EQ_INT(wrong, 0);
    disk_cache_counters counters;
    disk_cache_get_counters(cache, &counters);
    CHECK_EQ_INT(counters.bytes_stored, present_total);
    CHECK_EQ_INT(counters.checksum_failures, 0);
}

static shared_blob *make_blobs_of(int count, uint64_t first_seed, uint64_t blocks, uint32_t unit)
{
    shared_blob *blobs = calloc((size_t)count, sizeof *blobs);
    for (int i = 0; i < count; i++) {
        blobs[i].seed = first_seed + (uint64_t)i;
        blobs[i].size = blocks * unit - (uint64_t)(i % 3) * 777;
        make_etag(blobs[i].seed, blobs[i].etag);
        blobs[i].key = (disk_cache_blob_key){.etag = blobs[i].etag, .size = blobs[i].size};
    }
    return blobs;
}

static shared_blob *make_blobs(int count, uint64_t first_seed, uint64_t blocks)
{
    return make_blobs_of(count, first_seed, blocks, BS);
}

/* Single-threaded after the storm: what is present is right, and the accounting agrees. */
static uint64_t verify_all(disk_cache *cache, shared_blob *blobs, int count)
{
    uint8_t *buf = malloc(BS);
    uint64_t present_bytes = 0;
    int wrong = 0;
    for (int b = 0; b < count; b++) {
        for (uint64_t i = 0; i < block_count(blobs[b].size, BS); i++) {
            size_t len = block_len(blobs[b].size, BS, i);
            if (disk_cache_read_block(cache, &blobs[b].key, i, buf, len)) {
                present_bytes += len;
                wrong += !block_matches(blobs[b].seed, i, buf, len);
            }
        }
        size_t len = 0;
        if (disk_cache_read_prefix(cache, &blobs[b].key, buf, PREFIX_MAX, &len))
            present_bytes += 16 + len;
    }
    CHECK_EQ_INT(wrong, 0);
    free(buf);
    return present_bytes;
}

int main(void)
{
    int scale = sanitized_build() ? 2 : 5; /* the fdatasync of each written block dominates */
    char dir[64];
    make_scratch_dir(dir);

    /* Phase 1: 6 blobs of 16 blocks under a cap of 40 blocks: constant eviction. */
    const uint64_t cap = 40 * BS;
    phase capped = {.cache = open_test_cache(dir, BS, cap, NULL), .blobs = make_blobs(6, 500, 16),
                    .blob_count = 6, .iterations = 300 * scale};
    run_phase(&capped);
    CHECK_EQ_INT(atomic_load(&capped.wrong_bytes), 0);
    CHECK(atomic_load(&capped.hits) > 0);
    disk_cache_counters counters;
    disk_cache_get_counters(capped.cache, &counters);
    CHECK(counters.evictions > 0);
    CHECK(counters.bytes_stored <= cap);
    CHECK_EQ_INT(counters.checksum_failures, 0);
    CHECK_EQ_INT(verify_all(capped.cache, capped.blobs, 6), counters.bytes_stored);
    printf("capped: %d hits, %llu evictions, %llu write failures\n", atomic_load(&capped.hits),
           (unsigned long long)counters.evictions, (unsigned long long)counters.write_failures);
    disk_cache_close(capped.cache);
    free(capped.blobs);
    remove_tree(dir);

    /* Phase 2: 100 small blobs, no cap: more blobs than the cache keeps open at once. */
    make_scratch_dir(dir);
    phase many = {.cache = open_test_cache(dir, BS, 0, NULL), .blobs = make_blobs(100, 900, 3),
                  .blob_count = 100, .iterations = 200 * scale};
    run_phase(&many);
    CHECK_EQ_INT(atomic_load(&many.wrong_bytes), 0);
    CHECK(atomic_load(&many.hits) > 0);
    disk_cache_get_counters(many.cache, &counters);
    CHECK_EQ_INT(counters.evictions, 0);
    CHECK_EQ_INT(counters.checksum_failures, 0);
    CHECK_EQ_INT(verify_all(many.cache, many.blobs, 100), counters.bytes_stored);
    disk_cache_close(many.cache);
    /* And all of it is still there after a restart. */
    disk_cache *reopened = open_test_cache(dir, BS, 0, NULL);
    disk_cache_get_counters(reopened, &counters);
    CHECK_EQ_INT(verify_all(reopened, many.blobs, 100), counters.bytes_stored);
    CHECK(counters.bytes_stored > 0);
    disk_cache_close(reopened);
    free(many.blobs);
    remove_tree(dir);

    /* Phase 3: ranges over 4 KiB units, 4 blobs of 40 units under a cap of 100 units. */
    make_scratch_dir(dir);
    const uint64_t range_cap = 100 * RANGE_UNIT;
    phase ranges = {.cache = open_test_cache(dir, RANGE_UNIT, range_cap, NULL),
                    .blobs = make_blobs_of(4, 1300, 40, RANGE_UNIT), .blob_count = 4, .iterations = 100 * scale};
    run_phase_with(&ranges, range_worker_main);
    CHECK_EQ_INT(atomic_load(&ranges.wrong_bytes), 0);
    CHECK(atomic_load(&ranges.hits) > 0);
    disk_cache_get_counters(ranges.cache, &counters);
    CHECK(counters.bytes_stored <= range_cap);
    verify_ranges(ranges.cache, ranges.blobs, 4);
    printf("ranges: %d hits, %llu evictions\n", atomic_load(&ranges.hits), (unsigned long long)counters.evictions);
    disk_cache_close(ranges.cache);
    free(ranges.blobs);
    remove_tree(dir);

    test_hf_blob_first_readers(scale);
    return check_finish("test_disk_cache_threads");
}
