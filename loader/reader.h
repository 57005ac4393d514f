/* reader.h — executing a rank's reads with a pool of threads (private). */
#ifndef HUBFS_LOADER_READER_H
#define HUBFS_LOADER_READER_H

#include "source.h"
#include "target.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One read of file bytes and where its piece(s) go. */
typedef struct read_job {
    loader_file *file;
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
    bool announced;            /* the ranges were told already (reader_announce): not again */
    const atomic_bool *cancel; /* NULL, or set to stop taking jobs (the run then fails) */
} reader_config;

/* Tells each file the ranges that the jobs, sorted in file order, will read (will_need). */
void reader_announce(const read_job *jobs, size_t count);

/* Sorts the jobs by file position, tells each file the ranges it will be read at
 * (will_need), and runs them, keeping `threads` reads in flight; waits for the target to
 * finish. 0 or -1. */
int reader_run(read_job *jobs, size_t count, load_target *target, const reader_config *config,
               char *err, size_t errlen);

#endif
