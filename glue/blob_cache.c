/* blob_cache.c — the persistent cache, shared by the Hub sources of a process. */
#include "blob_cache.h"

#include "cache_dir.h"
#include "hf_cache.h"
#include "sources.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIRST_PREFIX_CAPACITY (64u << 10)

struct blob_cache {
    char *directory;
    char *metadata_dir;
    disk_cache *disk;            /* NULL when not ours to use */
    bool shares_disk;            /* disk is the process-wide handle below */
    hf_cache *hf;                /* complete huggingface_hub blobs when disk is NULL */
};

/* One disk cache handle per process: the directory's lock would refuse a second one. */
static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char *directory;
    disk_cache *disk;
    unsigned users;
} shared;

/* The process-wide handle of directory, opened on first use: 0. While another directory's is
 * shared, a handle of its own: -1. Else an errno value (EWOULDBLOCK: another process has it). */
static int acquire_shared_disk(const char *directory, disk_cache **out, char *error,
                               size_t error_size)
{
    int result = 0;
    pthread_mutex_lock(&shared_lock);
    if (shared.users > 0 && strcmp(shared.directory, directory) == 0) {
        shared.users++;
        *out = shared.disk;
    } else if (shared.users > 0) {
        result = cache_dir_open_blocks(directory, CACHE_DIR_DEFAULT_MAX_BYTES, DISK_CACHE_UNIT, out,
                                       error, error_size);
        result = result ? result : -1; /* opened, but not shared */
    } else if (!(shared.directory = strdup(directory))) {
        result = ENOMEM;
        snprintf(error, error_size, "out of memory");
    } else if ((result = cache_dir_open_blocks(directory, CACHE_DIR_DEFAULT_MAX_BYTES,
                                               DISK_CACHE_UNIT, &shared.disk, error, error_size)) == 0) {
        shared.users = 1;
        *out = shared.disk;
    } else {
        free(shared.directory);
        shared.directory = NULL;
    }
    pthread_mutex_unlock(&shared_lock);
    return result;
}

static void release_shared_disk(void)
{
    pthread_mutex_lock(&shared_lock);
    if (shared.users > 0 && --shared.users == 0) {
        disk_cache_close(shared.disk);
        free(shared.directory);
        shared.disk = NULL;
        shared.directory = NULL;
    }
    pthread_mutex_unlock(&shared_lock);
}

/* The disk cache of c->directory. The repo metadata beside it is used only where the cache
 * could be: the directory passed its checks here, or in the process that holds it. */
static void open_disk(blob_cache *c, char *notice)
{
    char error[768] = "";
    int result = acquire_shared_disk(c->directory, &c->disk, error, sizeof error);
    c->shares_disk = result == 0;
    if (result <= 0) return;
    c->disk = NULL;
    if (result == EWOULDBLOCK) {
        snprintf(notice, GLUE_NOTICE_LEN, "the persistent cache %s is in use by another hubfs "
                 "process (a mount, or another load): reading without it, so what is fetched now "
                 "is not kept (set HF_HOME elsewhere to keep a cache of its own)", c->directory);
        return;
    }
    snprintf(notice, GLUE_NOTICE_LEN, "persistent cache disabled: %s", error);
    free(c->metadata_dir);
    c->metadata_dir = NULL;
}

int blob_cache_open(const char *cache_dir, bool use_disk, blob_cache **out, char *notice,
                    char *err, size_t errlen)
{
    *out = NULL;
    blob_cache *c = calloc(1, sizeof *c);
    char *hub_cache = cache_dir_hf_hub_cache(); /* NULL: no home, so no huggingface_hub cache */
    if (c) c->directory = cache_dir ? strdup(cache_dir) : cache_dir_default();
    if (c && c->directory && use_disk) c->metadata_dir = cache_dir_metadata(c->directory);
    if (!c || (cache_dir && !c->directory) || (c->directory && use_disk && !c->metadata_dir)) {
        free(hub_cache);
        blob_cache_close(c);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!c->directory && use_disk)
        snprintf(notice, GLUE_NOTICE_LEN, "no persistent cache: this user has no home directory "
                 "to keep one in (set HF_HOME)");
    else if (use_disk)
        open_disk(c, notice);
    /* Without the disk cache, complete huggingface_hub blobs are read directly. */
    if (!c->disk && hub_cache && hf_cache_open(hub_cache, &c->hf) != 0) c->hf = NULL;
    free(hub_cache);
    *out = c;
    return 0;
}

void blob_cache_close(blob_cache *c)
{
    if (!c) return;
    if (c->shares_disk) release_shared_disk();
    else if (c->disk) disk_cache_close(c->disk);
    hf_cache_close(c->hf);
    free(c->metadata_dir);
    free(c->directory);
    free(c);
}

const char *blob_cache_metadata_dir(const blob_cache *c)
{
    return c->metadata_dir;
}

size_t blob_cache_read(blob_cache *c, const disk_cache_blob_key *key, uint64_t offset, void *buf,
                       size_t len)
{
    if (c->disk) return disk_cache_read_range(c->disk, key, offset, buf, len);
    if (c->hf && key->hf_repo_folder &&
        hf_cache_read(c->hf, key->hf_repo_folder, key->etag, key->size, offset, buf, len))
        return len;
    return 0;
}

bool blob_cache_stores(const blob_cache *c)
{
    return c->disk != NULL;
}

void blob_cache_store(blob_cache *c, const disk_cache_blob_key *key, uint64_t offset,
                      const void *buf, size_t len)
{
    if (c->disk) disk_cache_write_range(c->disk, key, offset, buf, len);
}

void blob_cache_widen(const blob_cache *c, uint64_t blob_size, uint64_t *first, uint64_t *end)
{
    if (!c->disk) return;
    *first -= *first % DISK_CACHE_UNIT;
    uint64_t tail = *end % DISK_CACHE_UNIT;
    if (tail) *end = blob_size - *end > DISK_CACHE_UNIT - tail ? *end + DISK_CACHE_UNIT - tail : blob_size;
}

uint8_t *blob_cache_read_prefix(blob_cache *c, const disk_cache_blob_key *key, size_t *len)
{
    size_t capacity = FIRST_PREFIX_CAPACITY, stored = 0;
    uint8_t *buf = c->disk ? malloc(capacity) : NULL;
    bool found = buf && disk_cache_read_prefix(c->disk, key, buf, capacity, &stored);
    if (buf && !found && stored > capacity) { /* longer than a first range: read it whole */
        uint8_t *grown = realloc(buf, stored);
        if (grown) buf = grown;
        found = grown && disk_cache_read_prefix(c->disk, key, buf, stored, &stored);
    }
    if (!found) {
        free(buf);
        return NULL;
    }
    *len = stored;
    return buf;
}

void blob_cache_store_prefix(blob_cache *c, const disk_cache_blob_key *key, const void *buf,
                             size_t len)
{
    if (c->disk) disk_cache_write_prefix(c->disk, key, buf, len);
}
