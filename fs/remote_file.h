/* remote_file.h — one file of a pinned commit: its identity (etag + size, from the tree listing,
 * so cached data needs no network), its Hub handle (opened at the first network need), how a
 * run of its pages is loaded (header prefix, persistent cache or huggingface_hub blob, then the
 * Hub), and what its safetensors header says (the tensor map and the order readers visit it in,
 * for the planner). */
#ifndef HUBFS_REMOTE_FILE_H
#define HUBFS_REMOTE_FILE_H

#include "context.h"
#include "planner.h"
#include "tensor_map.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct remote_file {
    fs_context *context;
    fs_repo *repo;
    char *path;                  /* in the repo */
    block_source source;         /* id, size, context = this */
    char etag[80];
    bool is_safetensors;
    /* Its head was fetched ahead of its open: the shard before it was read whole (reader.c). */
    atomic_bool head_warmed;
    /* A reader reads its tensors whole: the next shard's first window was handed out (reader.c);
     * deferred while no order to start it along was known. */
    atomic_bool next_started;
    atomic_bool next_deferred;

    pthread_mutex_t lock;        /* guards everything below */
    hub_file *handle;
    unsigned open_count;         /* open handles: the tensor map is dropped with the last */
    uint64_t header_end;         /* 8 + N once the first bytes were seen; 0 before */
    tensor_map *map;             /* once the whole header was present */
    planner_order order;         /* valid with map */
    bool not_safetensors;        /* its length field is impossible: plan it as any file */
    bool map_failed;             /* the header could not be parsed: plan without a map */
    bool prefix_stored;          /* the header went to the persistent cache */
    bool header_fetching;        /* a fetch of header bytes is under way */
    struct remote_file *open_prev, *open_next;   /* in context->open_files while open */
    /* Pages ever answered to the kernel (one bit per 4 KiB): its page cache likely still has
     * them (FOPEN_KEEP_CACHE), so speculation skips them. Allocated at the first open. */
    _Atomic(uint64_t *) served_pages;
} remote_file;

remote_file *remote_file_new(fs_context *context, fs_repo *repo, const char *path, uint64_t id,
                             uint64_t size, const char *etag);
void remote_file_free(remote_file *file);

void remote_file_opened(remote_file *file);
void remote_file_closed(remote_file *file);

/* The fetcher's load function: local copies first, then the Hub (*from_network set). */
int remote_file_load_run(void *file, const page_run *run, bool *from_network);

/* Serves a run from local copies only (stored header, persistent cache, huggingface_hub blob):
 * true when all of it was there. Cheap enough for a FUSE worker. */
bool remote_file_load_local(remote_file *file, const page_run *run);

/* A descriptor of a local file holding the whole content at its offsets (disk_cache_open_whole),
 * or -1: for passthrough_choose (file is a remote_file). */
int remote_file_open_whole(void *file);

/* The fetcher's store function: writes a fetched run to the persistent cache. */
void remote_file_store_run(void *file, const page_run *run);

/* Looks at the file's first pages in memory: learns where the header ends, and once all of it
 * is present builds the tensor map and stores the header in the persistent cache. Cheap when
 * there is nothing new to learn. */
void remote_file_learn_header(remote_file *file);

/* Records that the kernel was answered bytes [offset, offset + length). */
void remote_file_note_served(remote_file *file, uint64_t offset, uint64_t length);

/* The first range inside [begin, end) not yet served to the kernel, at or after begin: its
 * [*from, *to); false when everything there was served. */
bool remote_file_next_unserved(remote_file *file, uint64_t begin, uint64_t end, uint64_t *from, uint64_t *to);

/* The first range inside [begin, end) the kernel was served, like remote_file_next_unserved. */
bool remote_file_next_served(remote_file *file, uint64_t begin, uint64_t end, uint64_t *from, uint64_t *to);

/* Counts bytes handed to the kernel (an answer or a push) in the mount's and the repo's stats. */
void remote_file_count_served(remote_file *file, uint64_t length);
/* Counts a served read against the file's tensors when it was planned without them. */
void remote_file_count_read(remote_file *file, uint64_t offset, uint64_t length);

/* What holds byte offset, for the read trace: the tensor's name, "(header)", or "-" when the
 * file has no tensor map (yet) or the byte lies between tensors. Truncated to size. */
void remote_file_describe_offset(remote_file *file, uint64_t offset, char *out, size_t size);
/* Tensors of the file read whole so far (0 without a tensor map). */
size_t remote_file_whole_tensors(remote_file *file);

/* The next ranges of an open file's tensors not yet handed out, in the pattern's visiting order
 * (file order without one), up to bytes (written to ranges, at most max; the count is
 * returned): the start of a prefetch of a shard before its reader comes to it. */
size_t remote_file_bulk_ranges(remote_file *file, const planner_pattern *pattern, uint64_t bytes, plan_range *ranges,
                               size_t max);
/* Whether the file's reader visits its tensors in file order. */
bool remote_file_follows_file_order(remote_file *file);

/* A prefetch range (of a plan or remote_file_bulk_ranges) that found no memory: its tensor may
 * be handed out again. */
void remote_file_prefetch_refused(remote_file *file, plan_range range);

/* When the planner lacks the header of this open safetensors file and no fetch of it is under
 * way: the bytes to fetch ([0, probe) first, then [0, header end)), and true; the caller must
 * call remote_file_header_fetch_over once they have arrived or failed. */
bool remote_file_header_fetch_start(remote_file *file, uint64_t *begin, uint64_t *end);
/* For a file nobody opened yet: the end of the header probe to fetch ahead of its opening; 0 when
 * its header is known, being fetched, or it is no safetensors file. */
uint64_t remote_file_header_probe_end(remote_file *file);
void remote_file_header_fetch_over(remote_file *file);

/* Plans a read with what the file knows (header end, tensor order), under the file's lock. */
void remote_file_plan_read(remote_file *file, planner_streams *streams, uint64_t offset, uint64_t length,
                           read_plan *plan);

/* Bytes of the file held by the persistent cache or a huggingface_hub blob. */
uint64_t remote_file_cached_bytes(remote_file *file);

/* Maps a Hub failure to an errno value for the kernel. */
int remote_errno_of(hub_status status);

#endif
