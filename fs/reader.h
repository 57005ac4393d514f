/* reader.h — one open file: its read-ahead stream, its view of the safetensors header, and
 * the read path (header prefix, then aligned blocks from memory, disk or the Hub). */
#ifndef HUBFS_READER_H
#define HUBFS_READER_H

#include "namespace.h"

typedef struct open_file open_file;

/* Opens a file node (for a .safetensors file, fetches its header first). 0 or an errno value. */
int reader_open(fs_context *context, fs_node *node, open_file **out);

/* The bytes of one read: straight from a pinned block when the read lies within one block
 * (the common case: no copy, no allocation), else gathered in a buffer of its own. */
typedef struct read_result {
    const uint8_t *data;
    size_t length;               /* fewer than asked only at the end of the file */
    block *pinned;               /* released by reader_done */
    block_cache *cache;          /* of pinned: the handle may be gone by reader_done */
    uint8_t *gathered;           /* freed by reader_done */
} read_result;

/* Reads up to size bytes at offset. Returns 0 or an errno value; call reader_done in both
 * cases, once the bytes were sent. Once they are sent, the file may be closed by its reader
 * (and the handle freed by a release on another thread): reader_done needs only the result. */
int reader_read(open_file *handle, uint64_t offset, size_t size, read_result *out);
void reader_done(read_result *result);

void reader_close(open_file *handle);

#endif
