/* disk_cache_table.c — the disk cache's blob table, LRU lists, references, space accounting
 * and eviction (locking rules: disk_cache_internal.h). */
#include "disk_cache_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* ---- small helpers ---------------------------------------------------------------------- */

static int64_t now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static list_link *link_of(blob *b, bool open_list)
{
    return open_list ? &b->open_link : &b->access_link;
}

bool dc_list_contains(blob_list *list, blob *b, bool open_list)
{
    return link_of(b, open_list)->prev || list->head == b;
}

void dc_list_remove(blob_list *list, blob *b, bool open_list)
{
    list_link *link = link_of(b, open_list);
    if (link->prev)
        link_of(link->prev, open_list)->next = link->next;
    else
        list->head = link->next;
    if (link->next)
        link_of(link->next, open_list)->prev = link->prev;
    else
        list->tail = link->prev;
    link->prev = link->next = NULL;
    list->count--;
}

void dc_list_append(blob_list *list, blob *b, bool open_list)
{
    list_link *link = link_of(b, open_list);
    link->prev = list->tail;
    link->next = NULL;
    if (list->tail)
        link_of(list->tail, open_list)->next = b;
    else
        list->head = b;
    list->tail = b;
    list->count++;
}

static void list_move_to_tail(blob_list *list, blob *b, bool open_list)
{
    if (dc_list_contains(list, b, open_list)) {
        dc_list_remove(list, b, open_list);
        dc_list_append(list, b, open_list);
    }
}

uint64_t dc_block_length(const disk_cache *cache, const blob *b, uint64_t block_index)
{
    uint64_t offset = block_index * cache->block_size;
    return b->size - offset < cache->block_size ? b->size - offset : cache->block_size;
}

void dc_unlink_blob_file(disk_cache *cache, const char *stem, const char *suffix)
{
    char name[CACHE_NAME_MAX];
    cache_file_name(name, stem, suffix);
    unlinkat(cache->dir_fd, name, 0);
}

void dc_unlink_blob_files(disk_cache *cache, const char *stem)
{
    dc_unlink_blob_file(cache, stem, ".index");
    dc_unlink_blob_file(cache, stem, ".data");
    dc_unlink_blob_file(cache, stem, ".prefix");
}

void dc_punch_hole(int fd, uint64_t offset, uint64_t len)
{
    (void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len);
}

/* ---- blob table (cache->lock held) -------------------------------------------------------- */

static size_t bucket_of(const disk_cache *cache, const char *stem)
{
    uint64_t hash = UINT64_C(1469598103934665603);
    for (const char *c = stem; *c; c++)
        hash = (hash ^ (unsigned char)*c) * UINT64_C(1099511628211);
    return (size_t)(hash % cache->bucket_count);
}

blob *dc_find_blob(disk_cache *cache, const char *stem)
{
    for (blob *b = cache->buckets[bucket_of(cache, stem)]; b; b = b->hash_next)
        if (strcmp(b->stem, stem) == 0)
            return b;
    return NULL;
}

static void grow_table(disk_cache *cache)
{
    size_t new_count = cache->bucket_count * 2;
    blob **new_buckets = calloc(new_count, sizeof *new_buckets);
    if (!new_buckets)
        return; /* longer chains, still correct */
    blob **old = cache->buckets;
    size_t old_count = cache->bucket_count;
    cache->buckets = new_buckets;
    cache->bucket_count = new_count;
    for (size_t i = 0; i < old_count; i++) {
        for (blob *b = old[i], *next; b; b = next) {
            next = b->hash_next;
            size_t bucket = bucket_of(cache, b->stem);
            b->hash_next = new_buckets[bucket];
            new_buckets[bucket] = b;
        }
    }
    free(old);
}

blob *dc_insert_blob(disk_cache *cache, const char *stem, const char *etag, uint64_t size)
{
    blob *b = calloc(1, sizeof *b);
    if (!b || !(b->etag = strdup(etag))) {
        free(b);
        return NULL;
    }
    snprintf(b->stem, sizeof b->stem, "%s", stem);
    b->size = size;
    b->block_count = cache_block_count(size, cache->block_size);
    b->index_fd = b->data_fd = b->direct_fd = -1;
    pthread_mutex_init(&b->mutex, NULL);
    if (cache->blob_count >= cache->bucket_count)
        grow_table(cache);
    size_t bucket = bucket_of(cache, stem);
    b->hash_next = cache->buckets[bucket];
    cache->buckets[bucket] = b;
    cache->blob_count++;
    return b;
}

void dc_free_blob(blob *b)
{
    pthread_mutex_destroy(&b->mutex);
    free(b->etag);
    free(b);
}

void dc_remove_blob(disk_cache *cache, blob *b)
{
    for (blob **slot = &cache->buckets[bucket_of(cache, b->stem)]; *slot; slot = &(*slot)->hash_next) {
        if (*slot == b) {
            *slot = b->hash_next;
            break;
        }
    }
    cache->blob_count--;
    dc_free_blob(b);
}

/* Records the last access as the index's mtime, so LRU order survives a restart. */
static void persist_access_time(blob *b)
{
    if (b->index_fd < 0 || b->last_access_ns <= b->persisted_access_ns)
        return;
    struct timespec times[2] = {
        {.tv_nsec = UTIME_OMIT},
        {.tv_sec = b->last_access_ns / 1000000000, .tv_nsec = b->last_access_ns % 1000000000},
    };
    if (futimens(b->index_fd, times) == 0)
        b->persisted_access_ns = b->last_access_ns;
}

void dc_close_blob_files(blob *b)
{
    persist_access_time(b);
    if (b->index_fd >= 0)
        close(b->index_fd);
    if (b->data_fd >= 0)
        close(b->data_fd);
    if (b->direct_fd >= 0)
        close(b->direct_fd);
    b->index_fd = b->data_fd = b->direct_fd = -1;
    b->loaded = false;
}

/* Bounds the open descriptors: closes idle blobs' files, least recently used first. */
static void trim_open_blobs(disk_cache *cache)
{
    blob *b = cache->open_blobs.head;
    while (b && cache->open_blobs.count > MAX_OPEN_BLOBS) {
        blob *next = b->open_link.next;
        if (b->refs == 0) {
            dc_list_remove(&cache->open_blobs, b, true);
            dc_close_blob_files(b);
        }
        b = next;
    }
}

bool dc_evict_one(disk_cache *cache)
{
    blob *victim = cache->by_access.head;
    while (victim && (victim->refs > 0 || victim->evicting))
        victim = victim->access_link.next;
    if (!victim)
        return false;
    victim->evicting = true;
    dc_list_remove(&cache->by_access, victim, false);
    if (dc_list_contains(&cache->open_blobs, victim, true))
        dc_list_remove(&cache->open_blobs, victim, true);
    uint64_t freed = victim->block_bytes + victim->prefix_bytes;
    pthread_mutex_unlock(&cache->lock);

    /* Nobody else reaches the victim now: it had no reference and lookups wait. */
    dc_close_blob_files(victim);
    dc_unlink_blob_files(cache, victim->stem);

    pthread_mutex_lock(&cache->lock);
    cache->bytes_stored -= freed;
    cache->evictions++;
    dc_remove_blob(cache, victim);
    pthread_cond_broadcast(&cache->eviction_done);
    return true;
}

static bool below_free_floor(disk_cache *cache, uint64_t more_bytes)
{
    if (cache->min_free_percent <= 0)
        return false;
    struct statvfs fs;
    if (fstatvfs(cache->dir_fd, &fs) != 0)
        return false; /* cannot tell: the write itself reports a full disk */
    uint64_t free_bytes = (uint64_t)fs.f_bavail * fs.f_frsize;
    uint64_t floor_bytes = (uint64_t)fs.f_blocks * fs.f_frsize / 100 * (uint64_t)cache->min_free_percent;
    return free_bytes < floor_bytes || free_bytes - floor_bytes < more_bytes;
}

int dc_reserve_space(disk_cache *cache, uint64_t len)
{
    if (cache->max_bytes && len > cache->max_bytes)
        return ENOSPC;
    pthread_mutex_lock(&cache->lock);
    for (;;) {
        bool over_cap = cache->max_bytes &&
                        cache->bytes_stored + cache->bytes_reserved + len > cache->max_bytes;
        if (!over_cap && !below_free_floor(cache, cache->bytes_reserved + len))
            break;
        if (!dc_evict_one(cache)) {
            pthread_mutex_unlock(&cache->lock);
            return ENOSPC;
        }
    }
    cache->bytes_reserved += len;
    pthread_mutex_unlock(&cache->lock);
    return 0;
}

void dc_finish_reservation(disk_cache *cache, uint64_t reserved, int64_t stored_delta)
{
    pthread_mutex_lock(&cache->lock);
    cache->bytes_reserved -= reserved;
    cache->bytes_stored += (uint64_t)stored_delta;
    pthread_mutex_unlock(&cache->lock);
}

/* ---- references ---------------------------------------------------------------------------- */

bool dc_valid_key(const disk_cache_blob_key *key)
{
    return key && key->etag && key->etag[0] && strlen(key->etag) <= CACHE_MAX_ETAG_LEN &&
           key->size <= (uint64_t)INT64_MAX;
}

blob *dc_acquire_blob(disk_cache *cache, const disk_cache_blob_key *key, bool create)
{
    char stem[CACHE_STEM_MAX];
    cache_blob_stem(key->etag, key->size, stem);
    pthread_mutex_lock(&cache->lock);
    blob *b;
    while ((b = dc_find_blob(cache, stem)) != NULL && b->evicting)
        pthread_cond_wait(&cache->eviction_done, &cache->lock);
    int err = ENOENT;
    if (!b && create && !(b = dc_insert_blob(cache, stem, key->etag, key->size)))
        err = ENOMEM;
    if (b && (b->size != key->size || strcmp(b->etag, key->etag) != 0)) {
        b = NULL;
        err = EEXIST;
    }
    if (b)
        b->refs++;
    pthread_mutex_unlock(&cache->lock);
    if (!b)
        errno = err;
    return b;
}

void dc_release_blob(disk_cache *cache, blob *b, bool touched)
{
    pthread_mutex_lock(&cache->lock);
    if (touched) {
        b->last_access_ns = now_ns();
        list_move_to_tail(&cache->by_access, b, false);
        list_move_to_tail(&cache->open_blobs, b, true);
    }
    if (--b->refs == 0 && !b->has_files && !b->loaded)
        dc_remove_blob(cache, b);
    else if (cache->open_blobs.count > MAX_OPEN_BLOBS)
        trim_open_blobs(cache);
    pthread_mutex_unlock(&cache->lock);
}
