/* reader.h — serving one open file's reads, asynchronously.
 *
 * A read whose pages are in memory is answered at once. Otherwise the pages it lacks are
 * claimed (from the persistent cache right away when it has them, else queued for the fetch
 * threads) and the read waits as a block waiter: the FUSE worker goes back to the kernel, and
 * the thread that brings the last missing page answers the read. So no FUSE worker ever waits
 * on the network: listings, the stats file and cached data are served however slow a server is.
 * A reader that is killed or interrupted gets its read cancelled (EINTR) at once.
 */
#ifndef HUBFS_READER_H
#define HUBFS_READER_H

#include "namespace.h"

#include <fuse_lowlevel.h>

typedef struct open_file open_file;

/* Opens a file node. When the daemon serves its reads (no passthrough), the header is fetched
 * to plan them. 0 or an errno value. */
int reader_open(fs_context *context, fs_node *node, bool daemon_reads, open_file **out);

/* Answers req (a FUSE read of size bytes at offset), now or later from another thread. */
void reader_read(open_file *handle, fuse_req_t req, uint64_t offset, size_t size);

/* A range a reader will read soon (from the WILLNEED ioctl): fetched in the background. */
typedef struct reader_hint {
    uint64_t offset, length;
} reader_hint;

/* Schedules the hinted ranges (sorted, coalesced, within the memory budget). 0 or an errno. */
int reader_hint_ranges(open_file *handle, const reader_hint *hints, size_t count);

/* Only once no read of the handle is pending (the kernel releases a file after its reads). */
void reader_close(open_file *handle);

#endif
