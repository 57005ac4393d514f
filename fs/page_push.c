/* page_push.c — present bytes to the kernel's page cache, a block at a time. */
#include "page_push.h"

#include <fuse_lowlevel.h>

/* Pushes [at, at + length) of one block, taken already; true when the kernel took it (else the
 * pages stay marked served: the kernel asks for them, and they are fetched again if gone). */
static bool push_from_block(remote_file *file, uint64_t ino, block *blk, size_t in_block, size_t length,
                            uint64_t at)
{
    fs_context *context = file->context;
    remote_file_note_served(file, at, length);
    struct fuse_bufvec bytes = FUSE_BUFVEC_INIT(length);
    bytes.buf[0].mem = (void *)(block_data(blk) + in_block);
    if (fuse_lowlevel_notify_store(context->session, ino, (off_t)at, &bytes, 0) != 0)
        return false;
    atomic_fetch_add(&context->stats.bytes_pushed, length);
    remote_file_count_served(file, length);
    return true;
}

uint64_t page_push(remote_file *file, uint64_t ino, uint64_t from, uint64_t max)
{
    block_cache *blocks = file->context->blocks;
    uint64_t block_size = block_cache_block_size(blocks);
    uint64_t at = from;
    while (at - from < max && at < file->source.size) {
        block *blk;
        if (block_cache_get(blocks, &file->source, at / block_size, &blk) != 0)
            break;
        size_t in_block = (size_t)(at % block_size);
        /* Up to the first page a read arrived for: its answer brings that one. */
        uint64_t limit = max - (at - from), asked, asked_end;
        if (remote_file_next_served(file, at, at + limit, &asked, &asked_end))
            limit = asked - at;
        size_t length = limit ? block_cache_take_unserved(blocks, blk, in_block, limit) : 0;
        bool pushed = length && push_from_block(file, ino, blk, in_block, length, at);
        block_cache_put(blocks, blk);
        if (!pushed)
            break;
        at += length;
        if (at % block_size)   /* stopped inside the block: the next page is not there */
            break;
    }
    return at - from;
}
