/* hf_cache.h — read-only reuse of complete blobs in the huggingface_hub cache (private to fs/).
 *
 * huggingface_hub stores a downloaded file as $HF_HUB_CACHE/{models,datasets,spaces}--ORG--NAME/
 * blobs/<etag> and only renames it there once complete, so a blob of the right size is the
 * whole file. The disk cache only knows an etag and a size, so the repo folders are searched;
 * results are remembered per etag (a miss only for a few seconds, since a download may finish).
 *
 * Thread-safe.
 */
#ifndef HUBFS_HF_CACHE_H
#define HUBFS_HF_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hf_cache hf_cache;

/* root is $HF_HUB_CACHE (it need not exist yet). Returns 0 or an errno value. */
int hf_cache_open(const char *root, hf_cache **out);
void hf_cache_close(hf_cache *cache);

/* True when huggingface_hub holds the complete blob (etag: 40 or 64 lowercase hex digits). */
bool hf_cache_has_blob(hf_cache *cache, const char *etag, uint64_t size);

/* Copies len bytes at offset of the complete blob into buf; false when there is no complete
 * blob of that size or the read fails. */
bool hf_cache_read(hf_cache *cache, const char *etag, uint64_t size, uint64_t offset, void *buf,
                   size_t len);

/* True for an etag huggingface_hub uses as a blob file name: a sha256 or git sha1 in hex. */
bool hf_cache_is_hex_digest(const char *etag);

#endif
