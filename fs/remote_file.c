/* remote_file.c — loading a remote file's blocks and its safetensors header. */
#include "remote_file.h"

#include "log.h"

/* A block fetched from the network is read as ranges of this size in parallel. */
#define BLOCK_PART_SIZE (2u << 20)

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static bool ends_with(const char *text, const char *suffix)
{
    size_t n = strlen(text), m = strlen(suffix);
    return n >= m && strcmp(text + n - m, suffix) == 0;
}

remote_file *remote_file_new(fs_context *context, fs_repo *repo, const char *path, uint64_t id,
                             uint64_t size, const char *etag)
{
    remote_file *file = calloc(1, sizeof *file);
    if (!file || !(file->path = strdup(path))) {
        free(file);
        return NULL;
    }
    file->context = context;
    file->repo = repo;
    file->source = (block_source){.id = id, .size = size, .context = file};
    snprintf(file->etag, sizeof file->etag, "%s", etag);
    file->is_safetensors = ends_with(path, ".safetensors");
    pthread_mutex_init(&file->lock, NULL);
    pthread_mutex_init(&file->prefix_lock, NULL);
    return file;
}

void remote_file_free(remote_file *file)
{
    if (!file)
        return;
    if (file->handle)
        hub_file_close(file->handle);
    free(file->prefix);
    free(file->path);
    pthread_mutex_destroy(&file->lock);
    pthread_mutex_destroy(&file->prefix_lock);
    free(file);
}

int remote_errno_of(hub_status status)
{
    switch (status) {
    case HUB_OK: return 0;
    case HUB_ERR_REPO_NOT_FOUND:
    case HUB_ERR_REVISION_NOT_FOUND:
    case HUB_ERR_ENTRY_NOT_FOUND:
    case HUB_ERR_INVALID_ARGUMENT: return ENOENT;
    case HUB_ERR_UNAUTHORIZED:
    case HUB_ERR_GATED:
    case HUB_ERR_DISABLED: return EACCES;
    case HUB_ERR_NO_MEMORY: return ENOMEM;
    default: return EIO;
    }
}

static void log_fetch_failure(const remote_file *file, uint64_t offset, size_t len, const hub_error *err)
{
    if (err->status == HUB_ERR_OFFLINE)
        fs_log_limited(file->repo->display_name,
                       "offline: not cached: %s/%s bytes %llu-%llu (HF_HUB_OFFLINE=1; read it once online to cache it)",
                       file->repo->display_name, file->path, (unsigned long long)offset,
                       (unsigned long long)(offset + len - 1));
    else
        fs_log_limited(file->repo->display_name, "%s/%s: read of bytes %llu-%llu failed (%s): %s",
                       file->repo->display_name, file->path, (unsigned long long)offset,
                       (unsigned long long)(offset + len - 1), hub_status_name(err->status), err->message);
}

/* Opens the Hub handle once (a resolve request); later calls reuse it. */
static hub_status ensure_handle(remote_file *file, hub_file **out, hub_error *err)
{
    pthread_mutex_lock(&file->lock);
    hub_status status = HUB_OK;
    if (!file->handle)
        status = hub_file_open(file->context->hub, &file->repo->hub, file->repo->commit, file->path,
                               &file->handle, err);
    *out = file->handle;
    pthread_mutex_unlock(&file->lock);
    return status;
}

int remote_file_fetch_range(remote_file *file, uint64_t offset, void *buf, size_t len)
{
    fs_stats *stats = &file->context->stats;
    hub_error err = {0};
    hub_file *handle = NULL;
    hub_status status = ensure_handle(file, &handle, &err);
    if (status == HUB_OK) {
        atomic_fetch_add(&stats->requests, 1);
        status = hub_file_read(handle, offset, buf, len, &err);
    }
    if (status != HUB_OK) {
        atomic_fetch_add(&stats->fetch_failures, 1);
        log_fetch_failure(file, offset, len, &err);
        /* Refused access reads as such; anything else failed in transit (the log says why). */
        int error = remote_errno_of(status);
        return error == EACCES || error == ENOMEM ? error : EIO;
    }
    atomic_fetch_add(&stats->bytes_fetched, len);
    atomic_fetch_add(&file->repo->stats->bytes_fetched, len);
    return 0;
}

static int fetch_range_callback(void *file, uint64_t offset, void *buf, size_t len)
{
    return remote_file_fetch_range(file, offset, buf, len);
}

int remote_file_load_block(void *opaque, uint64_t index, void *buf, size_t len, bool *fetched)
{
    remote_file *file = opaque;
    fs_context *context = file->context;
    disk_cache_blob_key key = {.etag = file->etag, .size = file->source.size};
    if (context->disk) {
        if (disk_cache_read_block(context->disk, &key, index, buf, len)) {
            atomic_fetch_add(&context->stats.disk_hits, 1);
            return 0;
        }
        atomic_fetch_add(&context->stats.disk_misses, 1);
    }
    int error = fetcher_read_split(context->fetch_pool, fetch_range_callback, file, index * context->options.block_size,
                                   buf, len, BLOCK_PART_SIZE);
    *fetched = !error;
    return error;
}

int remote_file_load_block_range(void *opaque, uint64_t index, uint8_t *block_buf, size_t block_len,
                                 size_t from, size_t to, bool *whole)
{
    remote_file *file = opaque;
    fs_context *context = file->context;
    if (whole && context->disk) {
        disk_cache_blob_key key = {.etag = file->etag, .size = file->source.size};
        if (disk_cache_read_block(context->disk, &key, index, block_buf, block_len)) {
            atomic_fetch_add(&context->stats.disk_hits, 1);
            *whole = true;
            return 0;
        }
        atomic_fetch_add(&context->stats.disk_misses, 1);
    }
    uint64_t block_start = index * context->options.block_size;
    return fetcher_read_split(context->fetch_pool, fetch_range_callback, file, block_start + from,
                              block_buf + from, to - from, BLOCK_PART_SIZE);
}

void remote_file_store_block(void *opaque, uint64_t index, const void *data, size_t len)
{
    remote_file *file = opaque;
    fs_context *context = file->context;
    disk_cache_blob_key key = {.etag = file->etag, .size = file->source.size};
    if (context->disk && disk_cache_write_block(context->disk, &key, index, data, len) != 0)
        atomic_fetch_add(&context->stats.disk_write_failures, 1);
}

bool remote_file_fully_cached(remote_file *file)
{
    disk_cache_blob_key key = {.etag = file->etag, .size = file->source.size};
    return file->context->disk && disk_cache_cached_bytes(file->context->disk, &key) >= file->source.size;
}

uint64_t safetensors_header_end(const uint8_t *first_bytes, size_t available, uint64_t file_size)
{
    if (available < 8 || file_size < 8)
        return 0;
    uint64_t header_length = 0;
    for (int i = 7; i >= 0; i--)
        header_length = header_length << 8 | first_bytes[i];
    if (header_length > SAFETENSORS_MAX_HEADER || header_length > file_size - 8)
        return 0;
    return 8 + header_length;
}

/* The prefix length a valid stored prefix must have: the first range, or the whole header. */
static uint64_t expected_prefix_length(const uint8_t *bytes, size_t available, uint64_t file_size)
{
    uint64_t first = file_size < SAFETENSORS_FIRST_RANGE ? file_size : SAFETENSORS_FIRST_RANGE;
    uint64_t header_end = safetensors_header_end(bytes, available, file_size);
    return header_end > first ? header_end : first;
}

static bool load_prefix_from_disk(remote_file *file)
{
    disk_cache *disk = file->context->disk;
    if (!disk)
        return false;
    disk_cache_blob_key key = {.etag = file->etag, .size = file->source.size};
    uint64_t capacity = file->source.size < 8 + SAFETENSORS_MAX_HEADER ? file->source.size
                                                                       : 8 + SAFETENSORS_MAX_HEADER;
    uint8_t *buf = malloc(capacity ? capacity : 1);
    size_t length = 0;
    if (!buf || !disk_cache_read_prefix(disk, &key, buf, capacity, &length) ||
        length != expected_prefix_length(buf, length, file->source.size)) {
        free(buf);
        return false;
    }
    uint8_t *shrunk = realloc(buf, length ? length : 1);
    file->prefix = shrunk ? shrunk : buf;
    file->prefix_length = length;
    return true;
}

/* The first range, then exactly the rest of the header when it is longer. */
static int load_prefix_from_hub(remote_file *file)
{
    uint64_t size = file->source.size;
    size_t first = size < SAFETENSORS_FIRST_RANGE ? (size_t)size : SAFETENSORS_FIRST_RANGE;
    uint8_t *buf = malloc(first ? first : 1);
    if (!buf)
        return ENOMEM;
    int error = first ? remote_file_fetch_range(file, 0, buf, first) : 0;
    uint64_t length = first;
    uint64_t header_end = error ? 0 : safetensors_header_end(buf, first, size);
    if (header_end > first) {
        uint8_t *grown = realloc(buf, header_end);
        if (!grown) {
            free(buf);
            return ENOMEM;
        }
        buf = grown;
        error = remote_file_fetch_range(file, first, buf + first, header_end - first);
        length = header_end;
    }
    if (error) {
        free(buf);
        return error;
    }
    file->prefix = buf;
    file->prefix_length = length;
    disk_cache_blob_key key = {.etag = file->etag, .size = size};
    if (file->context->disk && disk_cache_write_prefix(file->context->disk, &key, buf, length) != 0)
        atomic_fetch_add(&file->context->stats.disk_write_failures, 1);
    return 0;
}

int remote_file_acquire_prefix(remote_file *file)
{
    pthread_mutex_lock(&file->prefix_lock);
    int error = 0;
    if (!file->prefix && !load_prefix_from_disk(file))
        error = load_prefix_from_hub(file);
    if (!error)
        file->prefix_users++;
    pthread_mutex_unlock(&file->prefix_lock);
    return error;
}

void remote_file_release_prefix(remote_file *file)
{
    pthread_mutex_lock(&file->prefix_lock);
    if (file->prefix_users && --file->prefix_users == 0) {
        free(file->prefix);
        file->prefix = NULL;
        file->prefix_length = 0;
    }
    pthread_mutex_unlock(&file->prefix_lock);
}
