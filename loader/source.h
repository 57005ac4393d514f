/* source.h — where a model's bytes come from (part of the loader's API).
 *
 * A source is a model "directory": a set of named files ('/'-separated names relative to the
 * source). The loader only tests names, opens files and reads them at offsets; it knows
 * nothing of where they live. It provides the local-file source itself; other sources (the
 * Hub, see glue/sources.h) fill in the same tables:
 *
 *     struct my_source { loader_source base; ... };   base first, ops set, location set
 *
 * Every function returns 0 (or the answer documented) or -1 with a message a user can act on
 * in (err, errlen); nothing prints. open and read_at may be called from many threads at once
 * (read_at on the same file or on different ones); the rest from one thread at a time. Messages
 * of open name the file; those of read_at need not (the loader prefixes the file's name). */
#ifndef HUBFS_LOADER_SOURCE_H
#define HUBFS_LOADER_SOURCE_H

#include "loader.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct loader_source loader_source;
typedef struct loader_file loader_file;

typedef struct loader_range {
    uint64_t offset, length;
} loader_range;

/* Replaces *kept (freeing it) with a copy of a will_need plan; none when out of memory (a plan is
 * a hint). */
static inline void loader_keep_plan(loader_range **kept, size_t *kept_count, const loader_range *ranges,
                                    size_t count)
{
    loader_range *copy = count ? (loader_range *)malloc(count * sizeof *copy) : NULL;
    if (copy) memcpy(copy, ranges, count * sizeof *copy);
    free(*kept);
    *kept = copy;
    *kept_count = copy ? count : 0;
}

typedef struct loader_file_ops {
    /* Reads exactly len bytes at offset (offset + len <= size). Thread-safe. */
    int (*read_at)(loader_file *file, uint64_t offset, void *buf, size_t len, char *err,
                   size_t errlen);
    /* Optional (NULL = no hint): the byte ranges about to be read, sorted by offset and
     * disjoint, sent once before the reads start. A source may prefetch them, or ignore it. */
    void (*will_need)(loader_file *file, const loader_range *ranges, size_t count);
    void (*close)(loader_file *file);
} loader_file_ops;

struct loader_file {
    const loader_file_ops *ops;
    uint64_t size;
};

typedef struct loader_source_ops {
    /* 1 when `name` is a file of the source, 0 when there is no such name, -1 on error. */
    int (*contains)(loader_source *source, const char *name, char *err, size_t errlen);
    /* Calls each(ctx, name, size) for every file directly in the source (no sub-directories),
     * in no particular order. Used for messages about what is there. */
    int (*list)(loader_source *source, void (*each)(void *ctx, const char *name, uint64_t size),
                void *ctx, char *err, size_t errlen);
    /* Opens a file for reading; close it with out->ops->close. */
    int (*open)(loader_source *source, const char *name, loader_file **out, char *err,
                size_t errlen);
    /* Frees the source; every file it opened must be closed first. */
    void (*destroy)(loader_source *source);
} loader_source_ops;

struct loader_source {
    const loader_source_ops *ops;
    /* Where the files are, for messages: a file is called "<location>/<name>", or just
     * "<name>" when location is "" (the current directory). */
    const char *location;
    /* Reads in flight that suit this source when the caller does not say (0: the loader's
     * default). A high-latency source wants more than a local disk does. */
    unsigned reader_threads;
    /* Bytes per read that suit this source when the caller does not say (0: the default). */
    size_t chunk_bytes;
};

/* The local-file source over a directory (NULL or "" = the current directory). Files are
 * opened O_NONBLOCK (a FIFO posing as a shard fails instead of hanging), must be regular, and
 * have the kernel's read-ahead turned off, so reading a header never pulls weight bytes (on a
 * lazy mount, a network fetch); will_need then advises the kernel about the planned ranges a
 * little ahead of the reads. */
int loader_source_open_local(const char *directory, loader_source **out, char *err,
                             size_t errlen);

/* Offered each local file's whole plan (its descriptor and the ranges will_need got) before the
 * kernel is advised: a filesystem with a prefetch control of its own (a hubfs mount) takes the
 * plan that way. True when it did (the kernel is then not advised); false otherwise. */
typedef bool (*loader_plan_hook)(int fd, const loader_range *ranges, size_t count);

/* loader_source_open_local, with a plan hook (NULL: none). */
int loader_source_open_local_hooked(const char *directory, loader_plan_hook hook, loader_source **out,
                                    char *err, size_t errlen);

/* loader_model_open (loader.h) over the local source with a plan hook. */
int loader_model_open_hooked(const char *path, loader_plan_hook hook, loader_model **out, char *err,
                             size_t errlen);

static inline void loader_source_destroy(loader_source *source)
{
    if (source) source->ops->destroy(source);
}

#endif
