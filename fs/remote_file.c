/* remote_file.c — loading a remote file's page runs and learning its safetensors header. */
#include "remote_file.h"

#include "log.h"

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
    return file;
}

static void forget_header(remote_file *file)
{
    if (file->map)
        planner_order_clear(&file->order);
    tensor_map_free(file->map);
    file->map = NULL;
}

void remote_file_free(remote_file *file)
{
    if (!file)
        return;
    free(atomic_load(&file->served_pages));
    if (file->handle)
        hub_file_close(file->handle);
    forget_header(file);
    free(file->path);
    pthread_mutex_destroy(&file->lock);
    free(file);
}

/* Lock order: the context's open_files_lock, then the file's lock. */
/* The served bitmap, made at the first open (kept until unmount: the kernel keeps pages across
 * opens). Without it (no memory, or a size past any real file that a hostile tree may claim),
 * speculation just does not know. */
#define SERVED_MAP_MAX_FILE_BYTES ((uint64_t)1 << 40)   /* a 32 MiB map */

static void ensure_served_map(remote_file *file)
{
    if (atomic_load(&file->served_pages) || file->source.size > SERVED_MAP_MAX_FILE_BYTES)
        return;
    size_t words = (size_t)((file->source.size + BLOCK_PAGE_SIZE - 1) / BLOCK_PAGE_SIZE + 63) / 64;
    uint64_t *map = calloc(words ? words : 1, sizeof *map);
    uint64_t *none = NULL;
    if (map && !atomic_compare_exchange_strong(&file->served_pages, &none, map))
        free(map);
}

void remote_file_opened(remote_file *file)
{
    fs_context *context = file->context;
    ensure_served_map(file);
    pthread_mutex_lock(&context->open_files_lock);
    pthread_mutex_lock(&file->lock);
    if (file->open_count++ == 0) {
        file->open_prev = NULL;
        file->open_next = context->open_files;
        if (context->open_files)
            context->open_files->open_prev = file;
        context->open_files = file;
    }
    pthread_mutex_unlock(&file->lock);
    pthread_mutex_unlock(&context->open_files_lock);
}

/* The map of a file nobody has open goes: a mount may see thousands of shards over its life. */
void remote_file_closed(remote_file *file)
{
    fs_context *context = file->context;
    pthread_mutex_lock(&context->open_files_lock);
    pthread_mutex_lock(&file->lock);
    if (file->open_count && --file->open_count == 0) {
        forget_header(file);
        if (file->open_prev) file->open_prev->open_next = file->open_next;
        else context->open_files = file->open_next;
        if (file->open_next)
            file->open_next->open_prev = file->open_prev;
        file->open_prev = file->open_next = NULL;
    }
    pthread_mutex_unlock(&file->lock);
    pthread_mutex_unlock(&context->open_files_lock);
}

/* Bits [from, to) of a 64-bit word, 0 <= from < to <= 64. */
static uint64_t bits_between(unsigned from, unsigned to)
{
    return (to == 64 ? ~0ULL : (1ULL << to) - 1) & ~((1ULL << from) - 1);
}

void remote_file_note_served(remote_file *file, uint64_t offset, uint64_t length)
{
    _Atomic uint64_t *map = (_Atomic uint64_t *)atomic_load(&file->served_pages);
    if (!map || length == 0)
        return;
    /* Whole pages only: a page the kernel got part of is one it still asks for. */
    uint64_t first = (offset + BLOCK_PAGE_SIZE - 1) / BLOCK_PAGE_SIZE;
    uint64_t end = offset + length >= file->source.size ? (file->source.size + BLOCK_PAGE_SIZE - 1) / BLOCK_PAGE_SIZE
                                                         : (offset + length) / BLOCK_PAGE_SIZE;
    for (uint64_t page = first; page < end;) {   /* a word at a time: one atomic per 256 KiB */
        uint64_t word = page / 64;
        unsigned to = end - word * 64 >= 64 ? 64 : (unsigned)(end - word * 64);
        atomic_fetch_or_explicit(&map[word], bits_between((unsigned)(page % 64), to), memory_order_relaxed);
        page = word * 64 + to;
    }
}

/* The first page of [page, last] that was served (served) or not (!served); last + 1 if none. */
static uint64_t next_page_in_state(_Atomic uint64_t *map, uint64_t page, uint64_t last, bool served)
{
    while (page <= last) {
        uint64_t word = atomic_load_explicit(&map[page / 64], memory_order_relaxed);
        word = (served ? word : ~word) >> (page % 64);
        if (word) {
            page += (uint64_t)__builtin_ctzll(word);
            return page <= last ? page : last + 1;
        }
        page = (page / 64 + 1) * 64;
    }
    return last + 1;
}

/* The first run of pages of [begin, end) in the state, clipped to [begin, end); false if none. */
static bool next_run_in_state(remote_file *file, uint64_t begin, uint64_t end, bool served, uint64_t *from,
                              uint64_t *to)
{
    _Atomic uint64_t *map = (_Atomic uint64_t *)atomic_load(&file->served_pages);
    if (end > file->source.size)
        end = file->source.size;
    if (begin >= end || (!map && served))
        return false;
    if (!map) {   /* no map (a file too large for one): nothing counts as served */
        *from = begin;
        *to = end;
        return true;
    }
    uint64_t last = (end - 1) / BLOCK_PAGE_SIZE;
    uint64_t page = next_page_in_state(map, begin / BLOCK_PAGE_SIZE, last, served);
    if (page > last)
        return false;
    uint64_t stop = next_page_in_state(map, page, last, !served);
    *from = page * BLOCK_PAGE_SIZE > begin ? page * BLOCK_PAGE_SIZE : begin;
    *to = stop * BLOCK_PAGE_SIZE < end ? stop * BLOCK_PAGE_SIZE : end;
    return true;
}

bool remote_file_next_unserved(remote_file *file, uint64_t begin, uint64_t end, uint64_t *from, uint64_t *to)
{
    return next_run_in_state(file, begin, end, false, from, to);
}

bool remote_file_next_served(remote_file *file, uint64_t begin, uint64_t end, uint64_t *from, uint64_t *to)
{
    return next_run_in_state(file, begin, end, true, from, to);
}

void remote_file_count_read(remote_file *file, uint64_t offset, uint64_t length)
{
    pthread_mutex_lock(&file->lock);
    if (file->map)
        planner_order_note_read(&file->order, offset, offset + length);
    pthread_mutex_unlock(&file->lock);
}

void remote_file_count_served(remote_file *file, uint64_t length)
{
    atomic_fetch_add(&file->context->stats.bytes_served, length);
    atomic_fetch_add(&file->repo->stats->bytes_served, length);
}

void remote_file_describe_offset(remote_file *file, uint64_t offset, char *out, size_t size)
{
    pthread_mutex_lock(&file->lock);
    const char *what = "-";
    if (file->header_end && offset < file->header_end)
        what = "(header)";
    else if (file->map) {
        size_t index = tensor_map_find(file->map, offset);
        if (index < file->map->count)
            what = file->map->tensors[index].name;
    }
    snprintf(out, size, "%s", what);
    pthread_mutex_unlock(&file->lock);
}

size_t remote_file_whole_tensors(remote_file *file)
{
    pthread_mutex_lock(&file->lock);
    size_t count = file->map ? file->order.history_count : 0;
    pthread_mutex_unlock(&file->lock);
    return count;
}

void remote_file_prefetch_refused(remote_file *file, plan_range range)
{
    pthread_mutex_lock(&file->lock);
    if (file->map)
        planner_order_prefetch_refused(&file->order, range);
    pthread_mutex_unlock(&file->lock);
}

size_t remote_file_bulk_ranges(remote_file *file, const planner_pattern *pattern, uint64_t bytes, plan_range *ranges,
                               size_t max)
{
    pthread_mutex_lock(&file->lock);
    size_t count = file->map ? planner_order_bulk(&file->order, pattern, bytes, ranges, max) : 0;
    pthread_mutex_unlock(&file->lock);
    return count;
}

bool remote_file_follows_file_order(remote_file *file)
{
    pthread_mutex_lock(&file->lock);
    bool follows = file->map && planner_order_follows_file(&file->order);
    pthread_mutex_unlock(&file->lock);
    return follows;
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

static disk_cache_blob_key cache_key_of(const remote_file *file)
{
    return (disk_cache_blob_key){.etag = file->etag, .size = file->source.size,
                                 .hf_repo_folder = file->repo->hf_folder};
}

int remote_file_open_whole(void *file)
{
    remote_file *f = file;
    if (!f->context->disk || !f->etag[0])
        return -1;
    disk_cache_blob_key key = cache_key_of(f);
    return disk_cache_open_whole(f->context->disk, &key);
}

static uint64_t block_file_offset(const remote_file *file, const block *blk)
{
    return block_index(blk) * (uint64_t)block_cache_block_size(file->context->blocks);
}

static uint64_t run_file_offset(const remote_file *file, const page_run *run)
{
    return block_file_offset(file, run->blk) + block_run_offset(run);
}

/* ---- loading ----------------------------------------------------------------------------- */

static void log_fetch_failure(const remote_file *file, uint64_t offset, size_t len, const hub_error *err)
{
    if (err->status == HUB_ERR_CANCELLED)
        return;   /* shutting down: nothing a user must act on */
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
    hub_file *handle = file->handle;
    pthread_mutex_unlock(&file->lock);
    if (handle) {
        *out = handle;
        return HUB_OK;
    }
    /* Resolved without the lock (a resolve may take seconds); a racing open loses. */
    hub_status status = hub_file_open(file->context->hub, &file->repo->hub, file->repo->commit, file->path,
                                      &handle, err);
    if (status != HUB_OK)
        return status;
    pthread_mutex_lock(&file->lock);
    if (!file->handle)
        file->handle = handle;
    else
        hub_file_close(handle);
    *out = file->handle;
    pthread_mutex_unlock(&file->lock);
    return HUB_OK;
}

static int fetch_from_hub(remote_file *file, uint64_t offset, void *buf, size_t len)
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

/* The stored header serves runs that lie inside it. */
static bool load_from_stored_prefix(remote_file *file, uint64_t offset, uint8_t *buf, size_t len)
{
    disk_cache *disk = file->context->disk;
    disk_cache_blob_key key = cache_key_of(file);
    size_t stored = 0;
    uint8_t probe[8];
    if (!file->is_safetensors || !disk || (disk_cache_read_prefix(disk, &key, probe, 0, &stored), stored) < offset + len)
        return false;
    uint8_t *prefix = malloc(stored);
    bool ok = prefix && disk_cache_read_prefix(disk, &key, prefix, stored, &stored) && stored >= offset + len;
    if (ok)
        memcpy(buf, prefix + offset, len);
    free(prefix);
    return ok;
}

/* Bytes of the run served locally, from its start. */
static size_t load_local_prefix_of_run(remote_file *file, uint64_t offset, uint8_t *buf, size_t len)
{
    fs_context *context = file->context;
    if (!context->disk)
        return 0;
    if (offset < file->source.size && load_from_stored_prefix(file, offset, buf, len))
        return len;
    disk_cache_blob_key key = cache_key_of(file);
    return disk_cache_read_range(context->disk, &key, offset, buf, len);
}

bool remote_file_load_local(remote_file *file, const page_run *run)
{
    size_t len = block_run_length(run);
    size_t served = load_local_prefix_of_run(file, run_file_offset(file, run), block_run_buffer(run), len);
    if (served == len)
        atomic_fetch_add(&file->context->stats.disk_hits, 1);
    return served == len;
}

int remote_file_load_run(void *opaque, const page_run *run, bool *from_network)
{
    remote_file *file = opaque;
    uint64_t offset = run_file_offset(file, run);
    uint8_t *buf = block_run_buffer(run);
    size_t len = block_run_length(run);
    size_t served = load_local_prefix_of_run(file, offset, buf, len);
    if (served == len) {
        atomic_fetch_add(&file->context->stats.disk_hits, 1);
        return 0;
    }
    if (file->context->disk)
        atomic_fetch_add(&file->context->stats.disk_misses, 1);
    int error = fetch_from_hub(file, offset + served, buf + served, len - served);
    *from_network = !error;
    return error;
}

/* The run, widened to whole units of the persistent cache where the block already holds the
 * bytes around it: the cache stores whole units only, and a run that starts or ends inside one
 * (a reader's exact pages next to a header fetched earlier) would otherwise leave that unit out
 * for good. */
static void widen_to_units(const remote_file *file, const page_run *run, size_t *from, size_t *to)
{
    block_cache *blocks = file->context->blocks;
    size_t length = block_length(run->blk);
    size_t unit_from = *from - *from % DISK_CACHE_UNIT;
    size_t unit_to = *to % DISK_CACHE_UNIT ? *to + (DISK_CACHE_UNIT - *to % DISK_CACHE_UNIT) : *to;
    if (unit_to > length)
        unit_to = length;
    if (unit_from < *from && block_cache_has(blocks, run->blk, unit_from, *from))
        *from = unit_from;
    if (unit_to > *to && block_cache_has(blocks, run->blk, *to, unit_to))
        *to = unit_to;
}

void remote_file_store_run(void *opaque, const page_run *run)
{
    remote_file *file = opaque;
    fs_context *context = file->context;
    if (!context->disk)
        return;
    size_t from = block_run_offset(run), to = from + block_run_length(run);
    widen_to_units(file, run, &from, &to);
    uint64_t block_start = block_file_offset(file, run->blk);
    disk_cache_blob_key key = cache_key_of(file);
    if (disk_cache_write_range(context->disk, &key, block_start + from, block_data(run->blk) + from, to - from) != 0)
        atomic_fetch_add(&context->stats.disk_write_failures, 1);
}

uint64_t remote_file_cached_bytes(remote_file *file)
{
    disk_cache_blob_key key = cache_key_of(file);
    return file->context->disk ? disk_cache_cached_bytes(file->context->disk, &key) : 0;
}

/* ---- the header ------------------------------------------------------------------------- */

/* Copies file bytes [0, length) out of memory blocks; false unless all are present. */
static bool copy_from_memory(remote_file *file, uint8_t *dst, uint64_t length)
{
    block_cache *blocks = file->context->blocks;
    uint64_t block_size = block_cache_block_size(blocks);
    for (uint64_t at = 0; at < length;) {
        uint64_t index = at / block_size, in_block = at % block_size;
        uint64_t n = block_size - in_block < length - at ? block_size - in_block : length - at;
        if (!block_cache_copy_present(blocks, file->source.id, index, in_block, in_block + n, dst + at))
            return false;
        at += n;
    }
    return true;
}

/* Tells a new tensor order what the kernel read before the header was known. The file's lock
 * is held. */
static void note_served_reads(remote_file *file)
{
    uint64_t from, to;
    for (uint64_t at = 0; at < file->source.size; at = to) {
        if (!remote_file_next_served(file, at, file->source.size, &from, &to))
            return;
        planner_order_note_read(&file->order, from, to);
    }
}

/* Parses the header (present in memory) and keeps it: the map for planning, the bytes on disk. */
static void take_header(remote_file *file, uint64_t header_end)
{
    uint8_t *header = header_end <= 8 + (uint64_t)TENSOR_MAP_MAX_HEADER ? malloc(header_end) : NULL;
    if (!header) {
        pthread_mutex_lock(&file->lock);
        file->map_failed = true;
        pthread_mutex_unlock(&file->lock);
        return;
    }
    if (!copy_from_memory(file, header, header_end)) {
        free(header);
        return;   /* evicted meanwhile: learnt on a later read */
    }
    tensor_map *map = tensor_map_build(header, header_end, file->source.size);
    pthread_mutex_lock(&file->lock);
    bool store = !file->prefix_stored && map && file->context->disk;
    file->prefix_stored = file->prefix_stored || store;
    if (map && !file->map && file->open_count && planner_order_init(&file->order, map) == 0) {
        file->map = map;
        map = NULL;
        note_served_reads(file);
    }
    file->map_failed = !file->map && !map;
    pthread_mutex_unlock(&file->lock);
    tensor_map_free(map);
    disk_cache_blob_key key = cache_key_of(file);
    if (store && disk_cache_write_prefix(file->context->disk, &key, header, header_end) != 0)
        atomic_fetch_add(&file->context->stats.disk_write_failures, 1);
    free(header);
}

void remote_file_learn_header(remote_file *file)
{
    if (!file->is_safetensors)
        return;
    pthread_mutex_lock(&file->lock);
    bool done = file->map || file->map_failed || file->not_safetensors || !file->open_count;
    uint64_t header_end = file->header_end;
    pthread_mutex_unlock(&file->lock);
    if (done)
        return;
    if (header_end == 0) {
        uint8_t first[8];
        if (file->source.size < 8 || !copy_from_memory(file, first, 8))
            return;
        header_end = safetensors_header_end(first, file->source.size);
        pthread_mutex_lock(&file->lock);
        file->header_end = header_end;
        file->not_safetensors = header_end == 0;
        pthread_mutex_unlock(&file->lock);
        if (header_end == 0)
            return;
    }
    take_header(file, header_end);
}

/* Whether the header is still to be fetched. The file's lock is held. */
static bool header_unknown(const remote_file *file)
{
    /* A header too long to be planned with is left to its readers. */
    return file->is_safetensors && !file->map && !file->map_failed && !file->not_safetensors &&
           !file->header_fetching && file->source.size >= 8 &&
           file->header_end <= 8 + (uint64_t)TENSOR_MAP_MAX_HEADER;
}

static uint64_t header_fetch_end(const remote_file *file)
{
    uint64_t probe = file->context->planner.header_probe;
    return file->header_end ? file->header_end : probe < file->source.size ? probe : file->source.size;
}

bool remote_file_header_fetch_start(remote_file *file, uint64_t *begin, uint64_t *end)
{
    pthread_mutex_lock(&file->lock);
    bool wanted = header_unknown(file) && file->open_count;
    *begin = 0;
    *end = header_fetch_end(file);
    file->header_fetching = wanted;
    pthread_mutex_unlock(&file->lock);
    return wanted;
}

uint64_t remote_file_header_probe_end(remote_file *file)
{
    pthread_mutex_lock(&file->lock);
    uint64_t end = header_unknown(file) && !file->open_count ? header_fetch_end(file) : 0;
    pthread_mutex_unlock(&file->lock);
    return end;
}

void remote_file_header_fetch_over(remote_file *file)
{
    pthread_mutex_lock(&file->lock);
    file->header_fetching = false;
    pthread_mutex_unlock(&file->lock);
}

/* What the budget still lets read-ahead claim: pooled pages are reused, not added. */
static uint64_t memory_room(fs_context *context)
{
    block_cache_counters memory;
    block_cache_get_counters(context->blocks, &memory);
    uint64_t held = memory.memory_used > memory.pool_bytes ? memory.memory_used - memory.pool_bytes : 0;
    return memory.memory_budget > held ? memory.memory_budget - held : 0;
}

/* The prefetch window along a learnt order grows with the link's delay: bytes in flight must
 * cover it. A quarter of the memory budget (the mount's planner config) where a first byte comes
 * at once, half of it from FULL_WINDOW_FIRST_BYTE_US on, in proportion between. Measured on the
 * bench model (3 GB, 4 shards; medians of alternating runs): over loopback a quarter is best (the
 * whole budget made `cat` 7 % slower); over 20 ms and 40 MB/s a connection half the budget took
 * `cat` 5.25 -> 4.65 s and from_pretrained 5.76 -> 4.87 s, and the whole budget did no better
 * there while load_file got slower (5.5-6.7 s against 4.6-5.0: a window the budget can never
 * hold is claimed in part, and the reader meets the holes). */
#define FULL_WINDOW_FIRST_BYTE_US 20000u

static uint64_t prefetch_window(fs_context *context)
{
    uint64_t least = context->planner.max_prefetch, most = context->options.memory_budget / 2;
    uint64_t first_byte_us = context->hub ? hub_first_byte_us(context->hub) : 0;
    if (most <= least || first_byte_us >= FULL_WINDOW_FIRST_BYTE_US)
        return most > least ? most : least;
    return least + (most - least) / FULL_WINDOW_FIRST_BYTE_US * first_byte_us;
}

void remote_file_plan_read(remote_file *file, planner_streams *streams, uint64_t offset, uint64_t length,
                           read_plan *plan)
{
    /* Only a tensor order uses it: other files' reads skip the block cache's lock. */
    uint64_t room = file->is_safetensors ? memory_room(file->context) : 0;
    fs_repo *repo = file->repo;
    pthread_mutex_lock(&file->lock);
    planner_file view = {.size = file->source.size, .is_safetensors = file->is_safetensors && !file->not_safetensors,
                         .header_end = file->header_end, .order = file->map ? &file->order : NULL,
                         .memory_room = room,
                         .repo_touching = (planner_touching)atomic_load(&repo->touching)};
    if (view.order) {   /* the pattern's lock nests in the file's: nothing takes them the other way */
        pthread_mutex_lock(&repo->pattern_lock);
        if (!repo->pattern)
            repo->pattern = calloc(1, sizeof *repo->pattern);   /* none: planned without */
        view.repo_pattern = repo->pattern;
    }
    planner_config config = file->context->planner;
    if (view.order)
        config.max_prefetch = prefetch_window(file->context);
    planner_plan_read(streams, &view, &config, offset, length, plan);
    if (view.order)
        pthread_mutex_unlock(&repo->pattern_lock);
    pthread_mutex_unlock(&file->lock);
    if (plan->touched)   /* the order held (the next shard's first touch asks heads at once) or broke */
        atomic_store(&file->repo->touching, (int)plan->touching);
}
