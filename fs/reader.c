/* reader.c — serving one open file's reads. */
#include "reader.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct open_file {
    fs_context *context;
    remote_file *file;
    const uint8_t *prefix;       /* the file's header, held for this handle's lifetime */
    size_t prefix_length;
    pthread_mutex_t lock;        /* guards stream */
    readahead_state stream;
};

int reader_open(fs_context *context, fs_node *node, open_file **out)
{
    open_file *handle = calloc(1, sizeof *handle);
    if (!handle)
        return ENOMEM;
    handle->context = context;
    handle->file = node->file;
    pthread_mutex_init(&handle->lock, NULL);
    readahead_init(&handle->stream);
    if (node->file->is_safetensors) {
        int error = remote_file_acquire_prefix(node->file);
        if (error) {
            pthread_mutex_destroy(&handle->lock);
            free(handle);
            return error;
        }
        pthread_mutex_lock(&node->file->prefix_lock);
        handle->prefix = node->file->prefix;
        handle->prefix_length = node->file->prefix_length;
        pthread_mutex_unlock(&node->file->prefix_lock);
    }
    *out = handle;
    return 0;
}

void reader_close(open_file *handle)
{
    if (handle->prefix)
        remote_file_release_prefix(handle->file);
    pthread_mutex_destroy(&handle->lock);
    free(handle);
}

/* Blocks this far behind a whole-file reader are done with (reads arrive slightly reordered). */
#define CONSUMED_LAG_BLOCKS 2

/* Hands the blocks the stream has earned to the fetch pool, before this read waits. A
 * whole-file reader's blocks left behind go back for reuse. Returns whether the read may fetch
 * just the pieces of blocks it touches: a young stream (no read-ahead earned yet) that did not
 * begin at the file's start is likely one rank's slice of a tensor, which needs a fraction of
 * a block. */
static bool read_ahead(open_file *handle, uint64_t offset, uint64_t length)
{
    fs_context *context = handle->context;
    pthread_mutex_lock(&handle->lock);
    readahead_plan plan = readahead_on_read(&handle->stream, &context->readahead, offset, length,
                                            handle->file->source.size);
    bool whole_file = readahead_reads_whole_file(&handle->stream, &context->readahead);
    /* (Not stream_start != 0: a fresh handle's first read joins the empty stream at byte 0.) */
    bool from_file_start = handle->stream.stream_start == 0 &&
                           handle->stream.contiguous_end == handle->stream.stream_end;
    bool partial = !from_file_start && handle->stream.window == 0;
    pthread_mutex_unlock(&handle->lock);
    uint64_t block_size = context->readahead.block_size;
    uint64_t current = block_size ? offset / block_size : 0;
    if (whole_file && current >= CONSUMED_LAG_BLOCKS)
        block_cache_mark_consumed(context->blocks, handle->file->source.id, current - CONSUMED_LAG_BLOCKS);
    for (uint64_t index = plan.first_block; index < plan.end_block; index++) {
        block *blk = block_cache_prefetch(context->blocks, &handle->file->source, index);
        if (blk)
            fetcher_submit(context->fetch_pool, blk);
    }
    return partial;
}

/* Records a read served without blocks (the header) in the stream, prefetching nothing: a
 * header inspection must not pull blocks, but a reader that goes on past the header reads the
 * file from its start. */
static void note_read(open_file *handle, uint64_t offset, uint64_t length)
{
    readahead_config record_only = handle->context->readahead;
    record_only.max_window = 0;
    pthread_mutex_lock(&handle->lock);
    readahead_on_read(&handle->stream, &record_only, offset, length, handle->file->source.size);
    pthread_mutex_unlock(&handle->lock);
}

static long copy_from_blocks(open_file *handle, uint64_t position, uint64_t end, uint8_t *out, bool partial)
{
    block_cache *blocks = handle->context->blocks;
    uint64_t block_size = block_cache_block_size(blocks);
    uint8_t *cursor = out;
    while (position < end) {
        uint64_t index = position / block_size;
        uint64_t in_block = position - index * block_size;
        uint64_t n = block_size - in_block;
        if (n > end - position)
            n = end - position;
        block *blk;
        int error = block_cache_read_range(blocks, &handle->file->source, index, in_block, in_block + n,
                                           partial, &blk);
        if (error)
            return -error;
        memcpy(cursor, block_data(blk) + in_block, n);
        block_cache_release(blocks, blk);
        cursor += n;
        position += n;
    }
    return (long)(cursor - out);
}

/* Serves [position, end) from the header prefix (and exactly-fetched bytes past it). Returns
 * 1 when done, 0 when blocks must serve the rest, or a negative errno value. */
static int read_through_prefix(open_file *handle, uint64_t offset, uint64_t *position, uint64_t end,
                               uint8_t *scratch)
{
    remote_file *file = handle->file;
    fs_context *context = handle->context;
    uint64_t n = (end < handle->prefix_length ? end : handle->prefix_length) - *position;
    memcpy(scratch, handle->prefix + *position, n);
    atomic_fetch_add(&context->stats.prefix_hits, 1);
    *position += n;
    if (*position == end)
        return 1;
    /* The kernel reads whole pages: the bytes just past a header are fetched exactly rather
     * than pulling a whole block for a header inspection. */
    uint64_t block_size = block_cache_block_size(context->blocks);
    if (block_cache_contains(context->blocks, file->source.id, *position / block_size) ||
        remote_file_fully_cached(file))
        return 0;
    int error = remote_file_fetch_range(file, *position, scratch + (*position - offset), end - *position);
    return error ? -error : 1;
}

int reader_read(open_file *handle, uint64_t offset, size_t size, read_result *out)
{
    remote_file *file = handle->file;
    fs_context *context = handle->context;
    uint64_t file_size = file->source.size;
    *out = (read_result){.data = (const uint8_t *)"", .cache = context->blocks};
    if (offset >= file_size || size == 0)
        return 0;
    uint64_t end = size < file_size - offset ? offset + size : file_size;
    out->length = end - offset;
    uint64_t block_size = block_cache_block_size(context->blocks);
    bool one_block = offset >= handle->prefix_length && offset / block_size == (end - 1) / block_size;
    uint8_t *scratch = NULL;
    if (!one_block && !(scratch = out->gathered = malloc(out->length)))
        return ENOMEM;
    out->data = scratch;
    atomic_fetch_add(&context->stats.reads, 1);
    atomic_fetch_add(&file->repo->stats->reads, 1);
    uint64_t position = offset;
    if (position < handle->prefix_length) {
        int done = read_through_prefix(handle, offset, &position, end, scratch);
        if (done) {
            note_read(handle, offset, end - offset);
            return done < 0 ? -done : 0;
        }
    }
    bool partial = read_ahead(handle, offset, end - offset);
    if (one_block) {
        uint64_t index = position / block_size;
        uint64_t in_block = position - index * block_size;
        int error = block_cache_read_range(context->blocks, &file->source, index, in_block,
                                           in_block + (end - position), partial, &out->pinned);
        if (!error)
            out->data = block_data(out->pinned) + (position - index * block_size);
        return error;
    }
    long copied = copy_from_blocks(handle, position, end, scratch + (position - offset), partial);
    return copied < 0 ? (int)-copied : 0;
}

void reader_done(read_result *result)
{
    if (result->pinned)
        block_cache_release(result->cache, result->pinned);
    free(result->gathered);
    *result = (read_result){0};
}
