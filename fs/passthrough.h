/* passthrough.h — the kernel reads a blob the disk cache holds whole straight from the cache's
 * file (FUSE passthrough, Linux >= 6.9, CAP_SYS_ADMIN), so a warm read costs what reading a
 * local file costs: no request reaches the daemon, and the page cache is the disk's (private to
 * fs/).
 *
 * libfuse 3.14 (Debian 12) does not know passthrough: its session's I/O is hooked (custom I/O)
 * so that the INIT reply asks for it and an open's reply carries FOPEN_PASSTHROUGH and the
 * backing file's id, both set by the thread that sends the reply.
 *
 * The kernel fails an open (EIO) that mixes modes on one inode: a passthrough open while it is
 * open through the page cache, the reverse, or two backing files. So every open of a file is
 * counted here, and an inode has one backing file while any passthrough open of it lasts.
 * Our count falls only at a release, which the kernel sends after dropping its own: it is never
 * lower than the kernel's. Thread-safe.
 */
#ifndef HUBFS_PASSTHROUGH_H
#define HUBFS_PASSTHROUGH_H

#include "fuse_lowlevel.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct passthrough passthrough;

/* Hooks the mounted session's I/O (before its loop runs). NULL when out of memory. */
passthrough *passthrough_new(struct fuse_session *session);
void passthrough_free(passthrough *pt);

/* From the init callback: the INIT reply this thread sends next asks for passthrough. */
void passthrough_ask_in_init(passthrough *pt);

/* How one open is served; filled by passthrough_choose, given back to passthrough_release. */
typedef struct passthrough_open {
    uint64_t ino;
    int backing_id;              /* -1: through the daemon and the page cache */
} passthrough_open;

/* Chooses how an open of ino is served and counts it: through the kernel when open_whole gives
 * a descriptor of the file's whole content (it is closed here) and no open of ino goes through
 * the daemon; else through the daemon. open_whole is not called when passthrough is off. */
void passthrough_choose(passthrough *pt, uint64_t ino, int (*open_whole)(void *arg), void *arg,
                        passthrough_open *out);

/* Replies to the open as chosen (fi->keep_cache is cleared for passthrough: the kernel refuses
 * the two together). Returns fuse_reply_open's result: on failure no release will come. */
int passthrough_reply_open(passthrough *pt, fuse_req_t req, struct fuse_file_info *fi,
                           const passthrough_open *open);

/* The kernel released the open (or it never reached the kernel). */
void passthrough_release(passthrough *pt, const passthrough_open *open);

#endif
