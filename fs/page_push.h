/* page_push.h — putting bytes in the kernel's page cache before a reader asks for them
 * (FUSE_NOTIFY_STORE): a reader going on in order finds them there instead of asking for each
 * 64-128 KiB with a request round trip (most of a loader's time on the mount once the bytes are
 * prefetched). Only bytes present in memory and never handed to the kernel go. */
#ifndef HUBFS_PAGE_PUSH_H
#define HUBFS_PAGE_PUSH_H

#include "remote_file.h"

/* Pushes what is present and unserved of the file from page-aligned from on, stopping at the
 * first page that is not, after about max bytes, or when the kernel refuses (the inode is gone,
 * the mount is going). Counts the bytes as served. Returns the bytes pushed. It may wait for pages
 * a request of the kernel is filling: never call it from a thread that answers fetches. */
uint64_t page_push(remote_file *file, uint64_t ino, uint64_t from, uint64_t max);

#endif
