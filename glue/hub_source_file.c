/* hub_source_file.c — reading one file of a Hub source: the persistent cache first, then the
 * exact range from the Hub (in the caller's thread; many callers keep many reads in flight),
 * kept in the cache for next time. A .safetensors file's header prefix is fetched as a mount
 * fetches it and stored in the same form, so either reuses what the other fetched. */
#include "hub_source.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* A mount's first read of a safetensors file: most headers fit, and one round trip gets it. */
#define FIRST_RANGE (64u << 10)
#define MAX_HEADER 100000000ULL      /* the reference reader's cap on the JSON header */

typedef struct hub_source_file {
    loader_file base;
    hub_source *source;
    const char *path;                /* in the repo (the tree entry's) */
    disk_cache_blob_key key;         /* etag + size, as the mount keys the same file */
    bool is_safetensors;
    pthread_mutex_t handle_lock;     /* guards handle, opened at the first fetch */
    hub_file *handle;
    pthread_mutex_t prefix_lock;     /* held while the prefix is loaded, once per file */
    atomic_bool prefix_ready;
    uint8_t *prefix;                 /* bytes [0, prefix_length) of a safetensors file */
    size_t prefix_length;
    loader_range *planned;           /* what the load will read (will_need), sorted; set before
                                      * the reads start */
    size_t planned_count;
} hub_source_file;

static bool ends_with(const char *text, const char *suffix)
{
    size_t n = strlen(text), m = strlen(suffix);
    return n >= m && strcmp(text + n - m, suffix) == 0;
}

static hub_status ensure_handle(hub_source_file *f, hub_file **out, hub_error *e)
{
    pthread_mutex_lock(&f->handle_lock);
    hub_status status = HUB_OK;
    if (!f->handle)
        status = hub_file_open(f->source->client, &f->source->repo, f->source->commit, f->path,
                               &f->handle, e);
    *out = f->handle;
    pthread_mutex_unlock(&f->handle_lock);
    return status;
}

static int fetch(hub_source_file *f, uint64_t offset, void *buf, size_t len, char *err,
                 size_t errlen)
{
    hub_error e = {0};
    hub_file *handle = NULL;
    hub_status status = ensure_handle(f, &handle, &e);
    if (status == HUB_OK) status = hub_file_read(handle, offset, buf, len, &e);
    if (status == HUB_OK) return 0;
    if (status == HUB_ERR_OFFLINE)
        return glue_fail(err, errlen, "bytes %llu-%llu are not cached: %s",
                         (unsigned long long)offset, (unsigned long long)(offset + len - 1),
                         e.message);
    return glue_fail(err, errlen, "%s", e.message);
}

/* A buffer for the bytes at [first, first + len) of a file that holds each byte at its file
 * offset's place in a page: the cache then stores them with O_DIRECT. Stored through the page
 * cache instead, an hf:// load spent half its CPU copying into it (and contending for the cache
 * file's lock), the copy here costs a fraction of that. *allocation is what to free. */
static uint8_t *page_aligned_like(uint64_t first, size_t len, void **allocation)
{
    size_t lead = (size_t)(first % DISK_CACHE_DIRECT_ALIGNMENT);
    if (posix_memalign(allocation, DISK_CACHE_DIRECT_ALIGNMENT, lead + len ? lead + len : 1) != 0)
        return NULL;
    return (uint8_t *)*allocation + lead;
}

/* Whether a read planned by the load (will_need) overlaps [begin, end). */
static bool planned_within(const hub_source_file *f, uint64_t begin, uint64_t end)
{
    size_t low = 0, high = f->planned_count;
    while (low < high) {   /* the first planned range that ends after begin */
        size_t mid = low + (high - low) / 2;
        if (f->planned[mid].offset + f->planned[mid].length <= begin)
            low = mid + 1;
        else
            high = mid;
    }
    return low < f->planned_count && f->planned[low].offset < end;
}

/* [first, end) widened to whole cache units, so that the cache can keep all of it; not on a side
 * where the widening would take bytes another read of the load asks for: that read fetches them
 * (both fetched a shared unit, and a rank of a small model cost more than the whole model), and
 * the cache joins the two halves of the unit when both are stored. */
static void widen_for_cache(const hub_source_file *f, uint64_t *first, uint64_t *end)
{
    uint64_t wide_first = *first, wide_end = *end;
    blob_cache_widen(f->source->cache, f->base.size, &wide_first, &wide_end);
    if (!planned_within(f, wide_first, *first)) *first = wide_first;
    if (!planned_within(f, *end, wide_end)) *end = wide_end;
}

/* [offset, offset + len): what the cache has, the rest from the Hub (widened to whole cache
 * units when `widen`, so that all of it can be kept). */
static int read_range(hub_source_file *f, uint64_t offset, uint8_t *buf, size_t len, bool widen,
                      char *err, size_t errlen)
{
    blob_cache *cache = f->source->cache;
    size_t cached = blob_cache_read(cache, &f->key, offset, buf, len);
    if (cached == len) return 0;
    offset += cached, buf += cached, len -= cached;
    uint64_t first = offset, end = offset + len;
    if (widen) widen_for_cache(f, &first, &end);
    bool placed_as_in_file = (uintptr_t)buf % DISK_CACHE_DIRECT_ALIGNMENT == first % DISK_CACHE_DIRECT_ALIGNMENT;
    bool own_buffer = first != offset || end != offset + len || (blob_cache_stores(cache) && !placed_as_in_file);
    void *allocation = NULL;
    uint8_t *fetched = own_buffer ? page_aligned_like(first, end - first, &allocation) : buf;
    if (!fetched) return glue_fail(err, errlen, "out of memory");
    int rc = fetch(f, first, fetched, end - first, err, errlen);
    if (rc == 0) blob_cache_store(cache, &f->key, first, fetched, end - first);
    if (own_buffer) {
        if (rc == 0) memcpy(buf, fetched + (offset - first), len);
        free(allocation);
    }
    return rc;
}

/* 8 + N from the first bytes of a safetensors file, or 0 when N cannot be right. */
static uint64_t header_end(const uint8_t *bytes, size_t available, uint64_t file_size)
{
    if (available < 8 || file_size < 8) return 0;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | bytes[i];
    return n > MAX_HEADER || n > file_size - 8 ? 0 : 8 + n;
}

/* The prefix a mount stores: the first range, or the whole header when it is longer. */
static uint64_t prefix_length_of(const uint8_t *bytes, size_t available, uint64_t file_size)
{
    uint64_t first = file_size < FIRST_RANGE ? file_size : FIRST_RANGE;
    uint64_t end = header_end(bytes, available, file_size);
    return end > first ? end : first;
}

static int load_prefix(hub_source_file *f, char *err, size_t errlen)
{
    uint64_t size = f->base.size;
    size_t length = 0;
    uint8_t *stored = blob_cache_read_prefix(f->source->cache, &f->key, &length);
    if (stored && length == prefix_length_of(stored, length, size)) {
        f->prefix = stored;
        f->prefix_length = length;
        return 0;
    }
    free(stored);
    size_t first = size < FIRST_RANGE ? (size_t)size : FIRST_RANGE;
    uint8_t *buf = malloc(first ? first : 1);
    if (!buf) return glue_fail(err, errlen, "out of memory");
    int rc = read_range(f, 0, buf, first, false, err, errlen);
    length = rc == 0 ? (size_t)prefix_length_of(buf, first, size) : 0;
    if (rc == 0 && length > first) { /* exactly the rest of a long header */
        uint8_t *grown = realloc(buf, length);
        rc = grown ? 0 : glue_fail(err, errlen, "out of memory for a %zu-byte header", length);
        buf = grown ? grown : buf;
        if (rc == 0) rc = read_range(f, first, buf + first, length - first, false, err, errlen);
    }
    if (rc != 0) {
        free(buf);
        return -1;
    }
    f->prefix = buf;
    f->prefix_length = length;
    blob_cache_store_prefix(f->source->cache, &f->key, buf, length);
    return 0;
}

static int ensure_prefix(hub_source_file *f, char *err, size_t errlen)
{
    if (atomic_load_explicit(&f->prefix_ready, memory_order_acquire)) return 0;
    pthread_mutex_lock(&f->prefix_lock);
    int rc = 0;
    if (!atomic_load_explicit(&f->prefix_ready, memory_order_relaxed)) {
        rc = load_prefix(f, err, errlen);
        if (rc == 0) atomic_store_explicit(&f->prefix_ready, true, memory_order_release);
    }
    pthread_mutex_unlock(&f->prefix_lock);
    return rc;
}

static int file_read_at(loader_file *file, uint64_t offset, void *buf, size_t len, char *err,
                        size_t errlen)
{
    hub_source_file *f = (hub_source_file *)file;
    if (f->is_safetensors && ensure_prefix(f, err, errlen) != 0) return -1;
    size_t from_prefix = 0;
    if (offset < f->prefix_length) {
        from_prefix = f->prefix_length - offset < len ? (size_t)(f->prefix_length - offset) : len;
        memcpy(buf, f->prefix + offset, from_prefix);
    }
    if (from_prefix == len) return 0;
    return read_range(f, offset + from_prefix, (uint8_t *)buf + from_prefix, len - from_prefix,
                      true, err, errlen);
}

/* Keeps the plan: widening for the cache leaves alone what other reads will fetch. A hint: out of
 * memory, none is kept. */
static void file_will_need(loader_file *file, const loader_range *ranges, size_t count)
{
    hub_source_file *f = (hub_source_file *)file;
    loader_keep_plan(&f->planned, &f->planned_count, ranges, count);
}

static void file_close(loader_file *file)
{
    hub_source_file *f = (hub_source_file *)file;
    if (!f) return;
    free(f->planned);
    if (f->handle) hub_file_close(f->handle);
    pthread_mutex_destroy(&f->handle_lock);
    pthread_mutex_destroy(&f->prefix_lock);
    free(f->prefix);
    free(f);
}

static const loader_file_ops hub_file_ops = {
    .read_at = file_read_at,
    .will_need = file_will_need, /* no prefetch: reads fetch what they ask, as they come */
    .close = file_close,
};

int hub_source_file_open(hub_source *source, const hub_tree_entry *entry, loader_file **out,
                         char *err, size_t errlen)
{
    hub_source_file *f = calloc(1, sizeof *f);
    if (!f) return glue_fail(err, errlen, "out of memory");
    f->base = (loader_file){.ops = &hub_file_ops, .size = entry->size};
    f->source = source;
    f->path = entry->path;
    f->key = (disk_cache_blob_key){.etag = entry->is_lfs ? entry->lfs_sha256 : entry->oid,
                                   .size = entry->size, .hf_repo_folder = source->hf_repo_folder};
    f->is_safetensors = ends_with(entry->path, ".safetensors");
    pthread_mutex_init(&f->handle_lock, NULL);
    pthread_mutex_init(&f->prefix_lock, NULL);
    atomic_init(&f->prefix_ready, false);
    *out = &f->base;
    return 0;
}
