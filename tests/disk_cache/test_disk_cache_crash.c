/* Crash safety: a child process writes blocks, ranges of several blocks (one sync and one
 * records write each) and prefixes (with evictions under a cap) in a loop until it is killed
 * with SIGKILL at a random moment; the cache is then reopened and every
 * block it reports present must be exactly the generator's bytes. Repeated over several rounds
 * on the same directory, so each round also starts from what the previous crash left. */
#include "check.h"
#include "dc_test_util.h"

#include <errno.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

enum { BS = 64 * 1024, BLOBS = 4, BLOCKS_PER_BLOB = 12, PREFIX_MAX = 200 };

typedef struct crash_blob {
    char etag[65];
    uint64_t seed, size;
    disk_cache_blob_key key;
} crash_blob;

static crash_blob blobs[BLOBS];

static void init_blobs(void)
{
    for (int i = 0; i < BLOBS; i++) {
        blobs[i].seed = 100 + (uint64_t)i;
        blobs[i].size = (uint64_t)BLOCKS_PER_BLOB * BS - 1000 * (uint64_t)i; /* short last blocks */
        make_etag(blobs[i].seed, blobs[i].etag);
        blobs[i].key = (disk_cache_blob_key){.etag = blobs[i].etag, .size = blobs[i].size};
    }
}

static size_t prefix_len(const crash_blob *blob, uint64_t version)
{
    return 50 + (size_t)((blob->seed + version) % (PREFIX_MAX - 50));
}

/* The child: writes forever. Prefix versions differ in length and content; each is valid. */
static void writer_loop(const char *dir, unsigned seed)
{
    disk_cache *cache = open_test_cache(dir, BS, (uint64_t)BS * BLOCKS_PER_BLOB * 3, NULL);
    uint8_t *buf = malloc(BS), *range_buf = malloc(4 * BS);
    uint64_t rng = seed;
    for (;;) {
        crash_blob *blob = &blobs[splitmix64(&rng) % BLOBS];
        uint64_t choice = splitmix64(&rng);
        if (choice % 8 == 0) {
            uint64_t version = choice >> 8;
            size_t len = prefix_len(blob, version % 1000);
            fill_block(blob->seed + 7777 + version % 1000, 0, buf, len);
            disk_cache_write_prefix(cache, &blob->key, buf, len);
            continue;
        }
        if (choice % 8 == 1) {   /* up to 4 blocks at any offset: the edges are not stored */
            uint64_t offset = (choice >> 8) % blob->size;
            size_t len = (size_t)((choice >> 40) % (4 * BS)) + 1;
            len = len < blob->size - offset ? len : (size_t)(blob->size - offset);
            fill_range(blob->seed, BS, blob->size, offset, range_buf, len);
            disk_cache_write_range(cache, &blob->key, offset, range_buf, len);
            continue;
        }
        uint64_t index = choice % block_count(blob->size, BS);
        size_t len = block_len(blob->size, BS, index);
        fill_block(blob->seed, index, buf, len);
        disk_cache_write_block(cache, &blob->key, index, buf, len);
    }
}

/* True when buf is one of the prefix versions the writer produces. */
static bool valid_prefix(const crash_blob *blob, const uint8_t *buf, size_t len)
{
    uint8_t expected[PREFIX_MAX];
    for (uint64_t version = 0; version < 1000; version++) {
        if (prefix_len(blob, version) != len)
            continue;
        fill_block(blob->seed + 7777 + version, 0, expected, len);
        if (memcmp(expected, buf, len) == 0)
            return true;
    }
    return false;
}

static bool temp_files_left(const char *dir)
{
    char path[512];
    return find_file(dir, ".tmp-", "", path, sizeof path);
}

/* Reopens after a crash and checks every block and prefix; returns the blocks present. */
static int verify_after_crash(const char *dir)
{
    disk_cache *cache = open_test_cache(dir, BS, (uint64_t)BS * BLOCKS_PER_BLOB * 3, NULL);
    CHECK(!temp_files_left(dir));
    uint8_t *buf = malloc(BS);
    int present = 0, wrong = 0;
    uint64_t present_bytes = 0;
    for (int b = 0; b < BLOBS; b++) {
        for (uint64_t i = 0; i < block_count(blobs[b].size, BS); i++) {
            size_t len = block_len(blobs[b].size, BS, i);
            if (disk_cache_read_block(cache, &blobs[b].key, i, buf, len)) {
                present++;
                present_bytes += len;
                wrong += !block_matches(blobs[b].seed, i, buf, len);
            }
        }
        size_t len = 0;
        if (disk_cache_read_prefix(cache, &blobs[b].key, buf, PREFIX_MAX, &len)) {
            wrong += !valid_prefix(&blobs[b], buf, len);
            present_bytes += 16 + len;
        }
    }
    CHECK_EQ_INT(wrong, 0);
    disk_cache_counters counters;
    disk_cache_get_counters(cache, &counters);
    /* The space accounting agrees with what can actually be read. */
    CHECK_EQ_INT(counters.bytes_stored, present_bytes);
    CHECK(counters.bytes_stored <= (uint64_t)BS * BLOCKS_PER_BLOB * 3);
    free(buf);
    disk_cache_close(cache);
    return present;
}

int main(void)
{
    init_blobs();
    char dir[64];
    make_scratch_dir(dir);
    int rounds = sanitized_build() ? 5 : 12;
    uint64_t rng = (uint64_t)time(NULL);
    int present = 0;
    for (int round = 0; round < rounds; round++) {
        pid_t child = fork();
        if (child == 0) {
            writer_loop(dir, (unsigned)(round * 7919 + (int)getpid()));
            _exit(0);
        }
        /* Sanitized builds start slower: give the child time to get going. */
        long delay_ms = (sanitized_build() ? 150 : 30) + (long)(splitmix64(&rng) % 170);
        struct timespec delay = {.tv_sec = 0, .tv_nsec = delay_ms * 1000000};
        nanosleep(&delay, NULL);
        kill(child, SIGKILL);
        int status = 0;
        waitpid(child, &status, 0);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL); /* it did not die by itself */
        present = verify_after_crash(dir);
    }
    CHECK(present > 0); /* the writer got somewhere, so the checks above checked something */
    printf("last round: %d blocks present after the kill\n", present);
    remove_tree(dir);
    return check_finish("test_disk_cache_crash");
}
