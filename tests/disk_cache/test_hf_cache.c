/* Reuse of huggingface_hub blobs, what the pytest cannot see from outside a process: a blob is
 * hashed once however often it is read, also after its descriptor was closed to stay under the
 * cap of open blobs; a changed file is hashed again (and refused while wrong); asking whether a
 * blob is there hashes nothing. Blob names are sha256s of the generator's bytes. */
#include "check.h"
#include "dc_test_util.h"

#include <fcntl.h>
#include <time.h>

enum { UNIT = 4096, BLOBS = 40, BLOB_SIZE = 3 * UNIT + 99 };   /* more blobs than are kept open */

static const char FOLDER[] = "models--org--many";

typedef struct hf_blob_spec {
    char etag[65];
    uint64_t seed;
    disk_cache_blob_key key;
} hf_blob_spec;

static void counters_of(disk_cache *cache, uint64_t *verified, uint64_t *rejected)
{
    disk_cache_counters counters;
    disk_cache_get_counters(cache, &counters);
    *verified = counters.hf_blobs_verified;
    *rejected = counters.hf_blobs_rejected;
}

/* 1 when the whole blob was served right, 0 when not served, -1 when WRONG bytes were. */
static int read_whole(disk_cache *cache, const hf_blob_spec *blob)
{
    uint8_t buf[BLOB_SIZE];
    size_t served = disk_cache_read_range(cache, &blob->key, 0, buf, BLOB_SIZE);
    if (!range_matches(blob->seed, UNIT, BLOB_SIZE, 0, buf, served))
        return -1;
    return served == BLOB_SIZE;
}

static void blob_path(const char *hub, const hf_blob_spec *blob, char *path, size_t size)
{
    snprintf(path, size, "%s/%s/blobs/%s", hub, FOLDER, blob->etag);
}

static void overwrite(const char *path, const uint8_t *content)
{
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, content, BLOB_SIZE, 0) == BLOB_SIZE);
    close(fd);
    struct timespec later = {.tv_sec = time(NULL) + 5};   /* another version of the file, surely */
    struct timespec times[2] = {later, later};
    utimensat(AT_FDCWD, path, times, 0);
}

int main(void)
{
    char dir[64], hub[64], path[512];
    make_scratch_dir(dir);
    make_scratch_dir(hub);
    static hf_blob_spec blobs[BLOBS];
    uint8_t content[BLOB_SIZE];
    for (int i = 0; i < BLOBS; i++) {
        blobs[i].seed = 2000 + (uint64_t)i;
        fill_range(blobs[i].seed, UNIT, BLOB_SIZE, 0, content, BLOB_SIZE);
        make_hf_blob(hub, FOLDER, content, BLOB_SIZE, blobs[i].etag);
        blobs[i].key = (disk_cache_blob_key){.etag = blobs[i].etag, .size = BLOB_SIZE, .hf_repo_folder = FOLDER};
    }
    disk_cache *cache = open_test_cache(dir, UNIT, 0, hub);
    uint64_t verified, rejected;

    /* Present, without a hash. */
    for (int i = 0; i < BLOBS; i++)
        CHECK_EQ_INT(disk_cache_present_bytes(cache, &blobs[i].key, 0, BLOB_SIZE), BLOB_SIZE);
    counters_of(cache, &verified, &rejected);
    CHECK_EQ_INT(verified, 0);

    /* Read twice, all of them: hashed once each, though not all stay open in between. */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < BLOBS; i++)
            CHECK_EQ_INT(read_whole(cache, &blobs[i]), 1);
    counters_of(cache, &verified, &rejected);
    CHECK_EQ_INT(verified, BLOBS);
    CHECK_EQ_INT(rejected, 0);

    /* Changed in place: hashed again, refused, never served; put back: served again. A blob
     * still open is looked up again only after 30 s, so this one was closed (the least recently
     * used, after all the others were read again). */
    blob_path(hub, &blobs[0], path, sizeof path);
    fill_range(blobs[0].seed, UNIT, BLOB_SIZE, 0, content, BLOB_SIZE);
    content[UNIT + 5] ^= 1;
    overwrite(path, content);
    CHECK_EQ_INT(read_whole(cache, &blobs[0]), 0);
    CHECK_EQ_INT(read_whole(cache, &blobs[0]), 0);
    counters_of(cache, &verified, &rejected);
    CHECK_EQ_INT(rejected, 1);
    CHECK_EQ_INT(disk_cache_present_bytes(cache, &blobs[0].key, 0, BLOB_SIZE), 0);
    content[UNIT + 5] ^= 1;
    overwrite(path, content);
    for (int i = BLOBS - 1; i >= 1; i--)   /* pushes blob 0 out of the open ones again */
        CHECK_EQ_INT(read_whole(cache, &blobs[i]), 1);
    disk_cache_close(cache);
    cache = open_test_cache(dir, UNIT, 0, hub);   /* a new process would know nothing either */
    CHECK_EQ_INT(read_whole(cache, &blobs[0]), 1);
    counters_of(cache, &verified, &rejected);
    CHECK_EQ_INT(verified, 1);
    disk_cache_close(cache);
    remove_tree(dir);
    remove_tree(hub);
    return check_finish("test_hf_cache");
}
