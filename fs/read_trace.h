/* read_trace.h — `--trace-reads FILE`: a line per read the kernel sent, with how long it waited
 * and what the planner asked for beyond it, and per push into the page cache, to find out why a
 * tool is slow on the mount. */
#ifndef HUBFS_READ_TRACE_H
#define HUBFS_READ_TRACE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct read_trace read_trace;

typedef struct read_trace_entry {
    const char *repo;            /* "org/name@rev" */
    const char *path;            /* in the repo */
    const char *tensor;          /* the tensor holding offset; NULL when none is known */
    uint64_t offset, length;
    int64_t arrived_ns, answered_ns;   /* monotonic */
    uint64_t ahead_bytes;        /* read-ahead and tensor rest this read asked for (not fetched yet) */
    int error;                   /* 0, or the errno answered */
    bool pushed;                 /* not a read: bytes put in the page cache after one, unasked */
} read_trace_entry;

/* Opens (creates or appends to) path, written by the daemon from then on. 0 or an errno. */
int read_trace_open(const char *path, read_trace **out);
/* Writes what is buffered and closes. NULL is fine. */
void read_trace_close(read_trace *trace);
/* Appends one line; lines reach the file within about a second. A failed write (disk full)
 * stops the trace: that call returns its errno (once), every other call 0. */
int read_trace_write(read_trace *trace, const read_trace_entry *entry);

#endif
