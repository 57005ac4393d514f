/* context.h — what every part of a mounted filesystem shares: the options, the Hub client, the
 * caches, the fetch pool, the namespace and the counters. One per mount. */
#ifndef HUBFS_CONTEXT_H
#define HUBFS_CONTEXT_H

#include "blocks.h"
#include "disk_cache.h"
#include "fetcher.h"
#include "hub.h"
#include "options.h"
#include "planner.h"
#include "read_trace.h"
#include "stats.h"

#include <pthread.h>
#include <stdatomic.h>

struct fuse_session;
typedef struct fs_namespace fs_namespace;

/* One repo pinned at one commit (a directory like /MNT/org/name@rev). Never freed while
 * mounted: open files keep pointing at it after a refresh replaces it. */
typedef struct fs_repo {
    hub_repo hub;                /* hub.id points at id */
    char *id;                    /* "org/name" */
    char *revision;              /* as asked, decoded: "main", "refs/pr/1", a SHA */
    char *display_name;          /* "org/name@rev" or "datasets/org/name@rev": log key */
    char *hf_folder;             /* its folder in the huggingface_hub cache: "models--org--name" */
    char commit[HUB_SHA_HEX_LEN + 1];
    int64_t commit_date;         /* Unix seconds, the files' times; 0 when unknown */
    repo_stats *stats;           /* shared by every pin of the same name, across refreshes */
    uint64_t root_ino;
    pthread_mutex_t tree_lock;   /* held while the tree is listed, once */
    bool tree_loaded;            /* under the namespace lock */
    atomic_bool bulk_reading;    /* a reader reads its tensors whole: the next shard comes ahead */
    atomic_int touching;         /* planner_touching: the order a reader touches its shards' tensors in */
    pthread_mutex_t pattern_lock;
    planner_pattern *pattern;    /* how its readers visit layers; allocated with its first tensor
                                  * map read (10 KiB: not for every repo listed) */
} fs_repo;

/* What an open file or directory holds for the kernel (fi->fh points at the enclosing struct).
 * Every handle is tracked, so the ones whose release never came (a signal ended the loop)
 * are still closed at unmount. */
typedef struct fs_handle {
    struct fs_handle *prev, *next;
    void (*close)(struct fs_handle *handle);
} fs_handle;

typedef struct fs_context {
    fs_options options;
    hub_client *hub;
    disk_cache *disk;            /* NULL with --no-disk-cache */
    char *metadata_dir;          /* per-repo metadata for offline use; NULL without a cache */
    block_cache *blocks;
    fetcher *fetch_pool;
    fs_namespace *names;
    planner_config planner;
    fs_stats stats;
    read_trace *trace;           /* NULL without --trace-reads */
    struct passthrough *passthrough;   /* NULL with --no-passthrough, or before mounting and after */
    struct fuse_session *session;
    pthread_mutex_t handles_lock;
    fs_handle *handles;
    atomic_int hinted_handles;   /* open handles that announced their reads (share HINT_MEMORY) */
    pthread_mutex_t open_files_lock;
    struct remote_file *open_files;   /* files with an open handle (remote_file.open_next) */
} fs_context;

void fs_handle_track(fs_context *context, fs_handle *handle, void (*close)(fs_handle *handle));
/* Untracks and closes. */
void fs_handle_close(fs_context *context, fs_handle *handle);
void fs_handle_close_all(fs_context *context);

#endif
