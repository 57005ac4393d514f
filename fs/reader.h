/* reader.h — one open file: its read-ahead stream, its view of the safetensors header, and
 * the read path (header prefix, then aligned blocks from memory, disk or the Hub). */
#ifndef HUBFS_READER_H
#define HUBFS_READER_H

#include "namespace.h"

typedef struct open_file open_file;

/* Opens a file node (for a .safetensors file, fetches its header first). 0 or an errno value. */
int reader_open(fs_context *context, fs_node *node, open_file **out);

/* Reads up to size bytes at offset into buf (fewer only at the end of the file). Returns the
 * byte count, or a negative errno value. */
long reader_read(open_file *handle, uint64_t offset, size_t size, uint8_t *buf);

void reader_close(open_file *handle);

#endif
