/* disk_cache_open.c — opening a cache directory: reaching it by a trusted path, creating it
 * 0700, locking it against a second process, adopting the blobs a previous run stored and
 * cleaning up after a crash. */
#include "disk_cache_internal.h"

#include "disk_cache_path.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- opening: adopting what a previous run stored --------------------------------------- */

/* A stream over an adopted index: counting its present units, or freeing the others' space. */
typedef struct adoption {
    disk_cache *cache;
    blob *b;
    int data_fd;                  /* where free_absent punches holes */
} adoption;

static void count_present(void *context, uint64_t first, uint64_t count, const cache_record *records)
{
    adoption *a = context;
    for (uint64_t i = 0; records && i < count; i++)
        if (records[i].state == CACHE_BLOCK_PRESENT)
            a->b->block_bytes += dc_block_length(a->cache, a->b, first + i);
}

/* Frees the space of units written but never recorded (a crash between data and record). */
static void free_absent(void *context, uint64_t first, uint64_t count, const cache_record *records)
{
    adoption *a = context;
    uint32_t bs = a->cache->block_size;
    for (uint64_t i = 0; i < count;) {
        if (records && records[i].state == CACHE_BLOCK_PRESENT) {
            i++;
            continue;
        }
        uint64_t run = 1;
        while (i + run < count && (!records || records[i + run].state != CACHE_BLOCK_PRESENT))
            run++;
        uint64_t end_unit = first + i + run;
        uint64_t end = end_unit * bs < a->b->size ? end_unit * bs : a->b->size;
        dc_punch_hole(a->data_fd, (first + i) * bs, end - (first + i) * bs);
        i += run;
    }
}

/* Runs free_absent when the data file holds more than its present units (and a unit of slack). */
static void reclaim_unrecorded_units(disk_cache *cache, blob *b, int index_fd)
{
    char name[CACHE_NAME_MAX];
    cache_file_name(name, b->stem, ".data");
    adoption a = {.cache = cache, .b = b};
    a.data_fd = openat(cache->dir_fd, name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (a.data_fd < 0)
        return;
    if (fstat(a.data_fd, &st) == 0 && (uint64_t)st.st_blocks * 512 > b->block_bytes + cache->block_size)
        cache_scan_records(index_fd, b->block_count, free_absent, &a);
    close(a.data_fd);
}

/* Reads the header of STEM.index and counts its present units; files that are unusable are
 * removed. */
static void adopt_index(disk_cache *cache, const char *stem)
{
    char name[CACHE_NAME_MAX], expected_stem[CACHE_STEM_MAX];
    cache_file_name(name, stem, ".index");
    int fd = openat(cache->dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    uint8_t encoded[CACHE_INDEX_HEADER_SIZE];
    cache_index_header header;
    struct stat index_st, data_st, prefix_st;
    bool usable = fd >= 0 && cache_pread_all(fd, encoded, sizeof encoded, 0) == 0 &&
                  cache_decode_index_header(encoded, &header) && header.block_size == cache->block_size &&
                  header.blob_size <= (uint64_t)INT64_MAX &&
                  cache_block_count(header.blob_size, header.block_size) <= CACHE_MAX_BLOCKS &&
                  fstat(fd, &index_st) == 0 && S_ISREG(index_st.st_mode);
    if (usable) {
        cache_blob_stem(header.etag, header.blob_size, expected_stem);
        cache_file_name(name, stem, ".data");
        usable = strcmp(expected_stem, stem) == 0 &&
                 fstatat(cache->dir_fd, name, &data_st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(data_st.st_mode);
    }
    blob *b = usable && !dc_find_blob(cache, stem) ? dc_insert_blob(cache, stem, header.etag, header.blob_size)
                                                   : NULL;
    adoption a = {.cache = cache, .b = b, .data_fd = -1};
    if (!b || cache_scan_records(fd, b->block_count, count_present, &a) != 0) {
        if (b)
            dc_remove_blob(cache, b);
        if (fd >= 0)
            close(fd);
        if (!usable) /* no memory is no reason to destroy a good blob */
            dc_unlink_blob_files(cache, stem);
        return;
    }
    cache_file_name(name, stem, ".prefix");
    bool has_prefix = fstatat(cache->dir_fd, name, &prefix_st, AT_SYMLINK_NOFOLLOW) == 0;
    b->prefix_bytes = has_prefix ? (uint64_t)prefix_st.st_size : 0;
    b->has_files = true;
    b->last_access_ns = b->persisted_access_ns =
        (int64_t)index_st.st_mtim.tv_sec * 1000000000 + index_st.st_mtim.tv_nsec;
    cache->bytes_stored += b->block_bytes + b->prefix_bytes;
    reclaim_unrecorded_units(cache, b, fd);
    close(fd);
}

static int by_last_access(const void *a, const void *b)
{
    int64_t x = (*(blob *const *)a)->last_access_ns, y = (*(blob *const *)b)->last_access_ns;
    return (x > y) - (x < y);
}

static int order_by_access(disk_cache *cache)
{
    blob **all = malloc((cache->blob_count ? cache->blob_count : 1) * sizeof *all);
    if (!all)
        return ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < cache->bucket_count; i++)
        for (blob *b = cache->buckets[i]; b; b = b->hash_next)
            all[n++] = b;
    qsort(all, n, sizeof *all, by_last_access);
    for (size_t i = 0; i < n; i++)
        dc_list_append(&cache->by_access, all[i], false);
    free(all);
    return 0;
}

/* Adopts every valid index, then removes temporary files and files of no blob. */
static int scan_directory(disk_cache *cache)
{
    int fd = openat(cache->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (!dir) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        return err;
    }
    char stem[CACHE_STEM_MAX];
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (strncmp(entry->d_name, ".tmp-", 5) == 0)
            unlinkat(cache->dir_fd, entry->d_name, 0);
        else if (cache_split_name(entry->d_name, ".index", stem))
            adopt_index(cache, stem);
    }
    rewinddir(dir);
    while ((entry = readdir(dir)) != NULL) {
        bool orphan = (cache_split_name(entry->d_name, ".data", stem) ||
                       cache_split_name(entry->d_name, ".prefix", stem)) &&
                      !dc_find_blob(cache, stem);
        if (orphan)
            unlinkat(cache->dir_fd, entry->d_name, 0);
    }
    closedir(dir);
    return order_by_access(cache);
}

/* The directory must be ours, on a path nobody else controls (disk_cache_path.h): the
 * cache deletes and chmods what it finds there and holds what the user's token could read. */
static int open_directory(disk_cache *cache, const char *path, char *error, size_t error_size)
{
    char reason[768];
    cache->dir_fd = cache_path_open_dir(path, CACHE_PATH_CREATE | CACHE_PATH_OWN, reason, sizeof reason);
    int err = cache->dir_fd < 0 ? errno : 0;
    if (err) {
        snprintf(error, error_size, "cannot use cache directory %s: %s", path, reason);
        return err;
    }
    /* Only ours, and writable by nobody else (checked): others may not even look. */
    struct stat st;
    if (fstat(cache->dir_fd, &st) != 0 || ((st.st_mode & 07777) != 0700 && fchmod(cache->dir_fd, 0700) != 0)) {
        err = errno;
        snprintf(error, error_size, "cannot make cache directory %s private: %s", path, strerror(err));
        return err;
    }
    cache->lock_fd = openat(cache->dir_fd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (cache->lock_fd < 0 || flock(cache->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        err = errno;
        snprintf(error, error_size,
                 err == EWOULDBLOCK ? "cache directory %s is in use by another hubfs process; give each "
                                      "mount its own cache directory"
                                    : "cannot lock cache directory %s: %s",
                 path, strerror(err));
        return err;
    }
    return 0;
}

int disk_cache_open(const disk_cache_config *config, disk_cache **out, char *error, size_t error_size)
{
    *out = NULL;
    if (error_size)
        error[0] = '\0';
    if (!config || !config->directory || !config->directory[0] || config->block_size < MIN_BLOCK_SIZE ||
        config->block_size > MAX_BLOCK_SIZE) {
        snprintf(error, error_size, "invalid cache configuration: a directory and a block size of %u to %u "
                 "bytes are required", MIN_BLOCK_SIZE, MAX_BLOCK_SIZE);
        return EINVAL;
    }
    disk_cache *cache = calloc(1, sizeof *cache);
    cache->buckets = cache ? calloc(INITIAL_BUCKETS, sizeof *cache->buckets) : NULL;
    if (!cache || !cache->buckets) {
        free(cache);
        snprintf(error, error_size, "out of memory opening the cache");
        return ENOMEM;
    }
    cache->bucket_count = INITIAL_BUCKETS;
    cache->dir_fd = cache->lock_fd = -1;
    cache->block_size = config->block_size;
    cache->max_bytes = config->max_bytes;
    cache->min_free_percent = config->min_free_percent == 0 ? DEFAULT_MIN_FREE_PERCENT
                              : config->min_free_percent > 100 ? 100 : config->min_free_percent;
    pthread_mutex_init(&cache->lock, NULL);
    pthread_cond_init(&cache->eviction_done, NULL);
    dc_edges_init(&cache->edges);

    int err = open_directory(cache, config->directory, error, error_size);
    if (!err && config->hf_hub_cache && config->hf_hub_cache[0] &&
        (err = hf_cache_open(config->hf_hub_cache, &cache->hf)) != 0)
        snprintf(error, error_size, "out of memory opening the cache");
    if (!err && (err = scan_directory(cache)) != 0)
        snprintf(error, error_size, "cannot read cache directory %s: %s", config->directory, strerror(err));
    if (err) {
        disk_cache_close(cache);
        return err;
    }
    /* The cap may have been lowered since the last run. */
    pthread_mutex_lock(&cache->lock);
    while (cache->max_bytes && cache->bytes_stored > cache->max_bytes && dc_evict_one(cache))
        ;
    pthread_mutex_unlock(&cache->lock);
    *out = cache;
    return 0;
}

void disk_cache_close(disk_cache *cache)
{
    if (!cache)
        return;
    for (size_t i = 0; i < cache->bucket_count; i++) {
        for (blob *b = cache->buckets[i], *next; b; b = next) {
            next = b->hash_next;
            dc_close_blob_files(b);
            dc_free_blob(b);
        }
    }
    free(cache->buckets);
    hf_cache_close(cache->hf);
    if (cache->lock_fd >= 0)
        close(cache->lock_fd); /* releases the flock */
    if (cache->dir_fd >= 0)
        close(cache->dir_fd);
    dc_edges_free(&cache->edges);
    pthread_cond_destroy(&cache->eviction_done);
    pthread_mutex_destroy(&cache->lock);
    free(cache);
}
