/* disk_cache_internal.h — what the files of the disk cache share (private to them).
 *
 * disk_cache.c: loading blobs, reading and writing ranges of units and prefixes.
 * disk_cache_table.c: the blob table, LRU lists, references, space accounting, eviction.
 * disk_cache_open.c: opening a cache directory and adopting what a previous run stored.
 * disk_cache_path.c: the trusted walk to the directory.
 * disk_cache_edges.c: parts of units a write covered in part, until another covers the rest.
 * cache_files.c: the on-disk formats. hf_cache.c: the huggingface_hub cache.
 *
 * Locking. cache->lock guards the blob table, both LRU lists, reference counts and the space
 * counters; it is never held during I/O. Each blob has a mutex guarding its files, its index
 * records (read and written under it, a range at a time) and its writes in flight while anyone
 * holds a reference; data is read and written with no lock held, using descriptors that stay
 * open while a reference is held. A blob with no reference can only be touched under
 * cache->lock (closing its files, evicting it). Order: blob mutex, then cache->lock; never the
 * other way.
 */
#ifndef HUBFS_DISK_CACHE_INTERNAL_H
#define HUBFS_DISK_CACHE_INTERNAL_H

#include "cache_files.h"
#include "disk_cache.h"
#include "hf_cache.h"

#include <pthread.h>
#include <stdatomic.h>

enum {
    MAX_OPEN_BLOBS = 64,          /* each holds three descriptors */
    DEFAULT_MIN_FREE_PERCENT = 5, /* mountpoint-s3 keeps the same floor */
    INITIAL_BUCKETS = 1024,
    /* Parts of units kept for a later write to complete: two per file being read (its runs'
     * head and tail) for 16 files at once; 2 MiB at 64 KiB units, none beyond 1 MiB units. */
    EDGE_SLOTS = 32,
    EDGE_MAX_UNIT = 1u << 20,
};
#define MIN_BLOCK_SIZE 512u
#define MAX_BLOCK_SIZE (1u << 30)

typedef struct blob blob;

typedef struct list_link {
    blob *prev, *next;
} list_link;

typedef struct blob_list {
    blob *head, *tail;
    size_t count;
} blob_list;

/* Units [first, end) being written by one call (on its stack): others leave them to it. */
typedef struct unit_flight {
    uint64_t first, end;
    struct unit_flight *next;
} unit_flight;

struct blob {
    char stem[CACHE_STEM_MAX];
    char *etag;
    uint64_t size;
    uint64_t block_count;         /* units */
    blob *hash_next;

    /* Guarded by cache->lock. */
    list_link access_link;        /* in cache->by_access while has_files */
    list_link open_link;          /* in cache->open_blobs while loaded */
    unsigned refs;
    bool evicting;                /* lookups wait until the eviction is over */
    int64_t last_access_ns;

    /* Guarded by mutex while refs > 0, by cache->lock otherwise. */
    pthread_mutex_t mutex;
    bool has_files;               /* STEM.index exists */
    bool loaded;                  /* descriptors open */
    int index_fd, data_fd;
    int direct_fd;                /* the data file again, with O_DIRECT; -1 where refused */
    unit_flight *flights;
    uint64_t block_bytes;         /* sum of present units' lengths */
    bool unsynced;                /* the index's UNSYNCED flag (disk_cache.c, "Crash safety") */
    bool unsynced_before;         /* ... found set when the index was opened: left by another run */
    uint64_t writes_started;      /* unit writes begun: a seal holds only if none began meanwhile */
    uint64_t prefix_bytes;        /* size of STEM.prefix */
    int64_t persisted_access_ns;  /* last access written as the index's mtime */
};

/* Part [from, to) of one unit of a blob, which no write has covered whole yet. */
typedef struct unit_edge {
    char *etag;                   /* NULL: a free slot */
    uint64_t blob_size, unit, used;
    size_t from, to;
    uint8_t *bytes;               /* the unit's length; valid in [from, to) */
} unit_edge;

typedef struct edge_stash {
    pthread_mutex_t lock;         /* taken alone, never with another */
    uint64_t clock;
    unit_edge slots[EDGE_SLOTS];
} edge_stash;

struct disk_cache {
    int dir_fd, lock_fd;
    uint32_t block_size;
    uint64_t max_bytes;
    int min_free_percent;
    hf_cache *hf;
    atomic_uint_fast64_t temp_seq;

    pthread_mutex_t lock;
    pthread_cond_t eviction_done;
    blob **buckets;
    size_t bucket_count, blob_count;
    blob_list by_access;          /* least recently used first */
    blob_list open_blobs;         /* least recently used first */
    uint64_t bytes_stored, bytes_reserved, evictions;

    atomic_uint_fast64_t block_hits, block_misses, write_failures, checksum_failures;
    edge_stash edges;
};

/* ---- disk_cache_edges.c ---- */

void dc_edges_init(edge_stash *stash);
void dc_edges_free(edge_stash *stash);
/* Adds part[0, len) at offset from of the unit (unit_len long). When the unit is now covered
 * whole, returns its bytes (the caller frees them) and forgets it; else NULL. */
uint8_t *dc_edges_merge(edge_stash *stash, const char *etag, uint64_t blob_size, uint64_t unit, size_t unit_len,
                        size_t from, const uint8_t *part, size_t len);

/* ---- disk_cache_table.c ---- */

/* Intrusive LRU lists: open_list picks the open_blobs links, else the by_access links. */
bool dc_list_contains(blob_list *list, blob *b, bool open_list);
void dc_list_remove(blob_list *list, blob *b, bool open_list);
void dc_list_append(blob_list *list, blob *b, bool open_list);

/* The length of a unit of b: block_size, or less for the last. */
uint64_t dc_block_length(const disk_cache *cache, const blob *b, uint64_t block_index);

void dc_unlink_blob_file(disk_cache *cache, const char *stem, const char *suffix);
/* Index first: without it the others are orphans, removed at the next open. */
void dc_unlink_blob_files(disk_cache *cache, const char *stem);
/* Frees a dropped or half-written unit's space; failing only wastes space. */
void dc_punch_hole(int fd, uint64_t offset, uint64_t len);

/* The blob table; cache->lock held (or a single thread, while opening). */
blob *dc_find_blob(disk_cache *cache, const char *stem);
blob *dc_insert_blob(disk_cache *cache, const char *stem, const char *etag, uint64_t size);
void dc_remove_blob(disk_cache *cache, blob *b);
void dc_free_blob(blob *b);

/* Persists the last access time and closes the descriptors. */
void dc_close_blob_files(blob *b);

/* Evicts the least recently used blob nobody is using. Returns false when there is none.
 * cache->lock is held, dropped while files are removed, and held again on return. */
bool dc_evict_one(disk_cache *cache);

/* Makes room for len more bytes under the cap and the free-space floor, evicting LRU blobs.
 * Returns 0 (the bytes are reserved: call dc_finish_reservation) or ENOSPC. */
int dc_reserve_space(disk_cache *cache, uint64_t len);
/* Releases a reservation; stored_delta is what the blob's files really grew by. */
void dc_finish_reservation(disk_cache *cache, uint64_t reserved, int64_t stored_delta);

bool dc_valid_key(const disk_cache_blob_key *key);
/* Takes a reference on the key's blob, creating its entry when create is set. NULL with errno
 * ENOENT (unknown and !create), ENOMEM, or EEXIST (its file name belongs to another etag). */
blob *dc_acquire_blob(disk_cache *cache, const disk_cache_blob_key *key, bool create);
/* Drops a reference; touched marks a use for the LRU order. */
void dc_release_blob(disk_cache *cache, blob *b, bool touched);

#endif
