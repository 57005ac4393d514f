/* remote_file.h — one file of a pinned commit: its identity (etag + size, known from the tree
 * listing, so cached data needs no network), its Hub handle (opened at the first network need),
 * how one of its blocks is loaded (persistent cache, then the Hub), and the safetensors header
 * kept in memory while the file is open. */
#ifndef HUBFS_REMOTE_FILE_H
#define HUBFS_REMOTE_FILE_H

#include "context.h"

#include <pthread.h>

#define SAFETENSORS_FIRST_RANGE (64u * 1024u)
#define SAFETENSORS_MAX_HEADER 100000000ULL

typedef struct remote_file {
    fs_context *context;
    fs_repo *repo;
    char *path;                  /* in the repo */
    block_source source;         /* id, size, context = this */
    char etag[80];
    bool is_safetensors;
    pthread_mutex_t lock;        /* guards handle */
    hub_file *handle;
    pthread_mutex_t prefix_lock; /* guards the prefix; held while it is fetched (once per file) */
    uint8_t *prefix;             /* the header's bytes [0, prefix_length) */
    size_t prefix_length;
    unsigned prefix_users;
} remote_file;

remote_file *remote_file_new(fs_context *context, fs_repo *repo, const char *path, uint64_t id,
                             uint64_t size, const char *etag);
void remote_file_free(remote_file *file);

/* The block cache's load function: persistent cache, else the Hub (*fetched set). */
int remote_file_load_block(void *file, uint64_t index, void *buf, size_t len, bool *fetched);

/* The block cache's range loader: bytes [from, to) of a block from the Hub, or (when whole is
 * given) the whole block from the persistent cache, setting *whole. */
int remote_file_load_block_range(void *file, uint64_t index, uint8_t *block_buf, size_t block_len,
                                 size_t from, size_t to, bool *whole);

/* Writes a fetched block to the persistent cache (a store thread calls it). */
void remote_file_store_block(void *file, uint64_t index, const void *data, size_t len);

/* Reads [offset, offset+len) straight from the Hub (no block): the bytes just past a header. */
int remote_file_fetch_range(remote_file *file, uint64_t offset, void *buf, size_t len);

/* Whether the persistent cache holds every byte of the file. */
bool remote_file_fully_cached(remote_file *file);

/* On open of a .safetensors file: makes the header resident (cache, else two exact fetches).
 * Returns 0 or an errno value; pair each success with remote_file_release_prefix. */
int remote_file_acquire_prefix(remote_file *file);
void remote_file_release_prefix(remote_file *file);

/* Length of the header prefix a safetensors file of file_size bytes needs, given its first
 * bytes (at least 8): 8 + N bounded by the limits, or 0 when the length field is invalid. */
uint64_t safetensors_header_end(const uint8_t *first_bytes, size_t available, uint64_t file_size);

/* Maps a Hub failure to an errno value for the kernel. */
int remote_errno_of(hub_status status);

#endif
