/* reader.h — executing a rank's reads with a pool of threads (private). */
#ifndef HUBFS_LOADER_READER_H
#define HUBFS_LOADER_READER_H

#include "target.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One read of file bytes and where its piece(s) go. */
typedef struct read_job {
    int fd;
    const char *path;       /* for messages */
    size_t shard;           /* jobs run in (shard, file_offset) order */
    uint64_t file_offset;
    size_t read_bytes;
    copy_2d copy;
    bool contiguous;        /* the bytes read are exactly the bytes written: may go direct */
} read_job;

typedef struct reader_config {
    unsigned threads;
    void (*progress)(void *ctx, uint64_t done_bytes, uint64_t total_bytes);
    void *progress_ctx;
} reader_config;

/* Sorts the jobs by file position and runs them, keeping `threads` reads in flight and
 * WILLNEED hints ahead of them; waits for the target to finish. 0 or -1. */
int reader_run(read_job *jobs, size_t count, load_target *target, const reader_config *config,
               char *err, size_t errlen);

#endif
