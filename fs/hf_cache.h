/* hf_cache.h — read-only reuse of complete blobs of the huggingface_hub cache (private to fs/).
 *
 * huggingface_hub stores a downloaded file as $HF_HUB_CACHE/{models,datasets,spaces}--ORG--NAME/
 * blobs/<etag>, renamed there once complete; the etag is the sha256 of the content for LFS
 * files, git's blob sha1 (of "blob SIZE\0" + content) otherwise. Nothing else is trusted:
 *
 *   - a blob is looked for only in the folder of the repo being read (another repo's folder
 *     may hold anything under any name);
 *   - the path to it is walked by the rules of disk_cache_path.h, and the blob is opened without
 *     following a symlink, must be a regular file of the right size, owned by root or the
 *     daemon's user and writable by nobody else;
 *   - its content is hashed once, on first use (the reader that needs it does it, other readers
 *     of the blob wait), and must give its name; the verdict is remembered for that version of
 *     the file, (dev, inode, size, mtime, ctime), so a changed file is hashed again. A blob that
 *     fails is never served and is logged once; so are refused paths (at most every 30 s).
 *
 * Open blobs are looked up again every 30 s (deleted or replaced meanwhile), misses every 5 s
 * (a download may complete). Thread-safe.
 */
#ifndef HUBFS_HF_CACHE_H
#define HUBFS_HF_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hf_cache hf_cache;

/* root is $HF_HUB_CACHE (it need not exist yet; a relative path is taken from the working
 * directory now). Returns 0 or an errno value. */
int hf_cache_open(const char *root, hf_cache **out);
void hf_cache_close(hf_cache *cache);

/* True when the repo folder ("models--org--name") holds a complete blob of that etag and size
 * that is not known to be bad. Hashes nothing: for planning and the cached_bytes xattr. */
bool hf_cache_has_blob(hf_cache *cache, const char *folder, const char *etag, uint64_t size);

/* Copies len bytes at offset of the blob into buf. True only when the repo folder holds the
 * complete blob and its content verified against its name. */
bool hf_cache_read(hf_cache *cache, const char *folder, const char *etag, uint64_t size, uint64_t offset,
                   void *buf, size_t len);

/* A new descriptor of the complete blob once its content verified against its name, or -1. */
int hf_cache_open_verified(hf_cache *cache, const char *folder, const char *etag, uint64_t size);

typedef struct hf_cache_counters {
    uint64_t blobs_verified;     /* hashed and found to match their names */
    uint64_t blobs_rejected;     /* hashed and found not to */
} hf_cache_counters;

void hf_cache_get_counters(hf_cache *cache, hf_cache_counters *out);

/* True for an etag huggingface_hub uses as a blob file name: a sha256 or git sha1 in hex. */
bool hf_cache_is_hex_digest(const char *etag);

/* True for a repo folder name of the huggingface_hub cache: {models,datasets,spaces}--ID with no
 * '/' (a single path component). */
bool hf_cache_is_repo_folder(const char *folder);

#endif
