/* safetensors.h — the strict safetensors header parser (private to the loader).
 *
 * A file is: 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data
 * buffer to the end of the file. Every rule of the format is enforced here; see
 * shared/design/loader-design.md. Nothing here prints; errors go to (err, errlen). */
#ifndef HUBFS_LOADER_SAFETENSORS_H
#define HUBFS_LOADER_SAFETENSORS_H

#include "source.h"

#include <stddef.h>
#include <stdint.h>

/* The reference reader's cap on the JSON header. */
#define ST_MAX_HEADER_BYTES 100000000ULL

typedef struct st_dtype_info {
    const char *name;
    unsigned bits; /* 4, 6, 8, 16, 32 or 64 */
} st_dtype_info;

typedef struct st_tensor {
    char *name;
    const st_dtype_info *dtype;
    size_t ndim;
    uint64_t *shape;     /* ndim entries; NULL for a scalar */
    uint64_t begin, end; /* relative to the data buffer */
} st_tensor;

typedef struct st_metadata_entry {
    char *key;
    char *value;
} st_metadata_entry;

typedef struct st_header {
    st_tensor *tensors; /* sorted by begin offset */
    size_t count;
    st_tensor **by_name; /* the same tensors sorted by name, for lookups */
    st_metadata_entry *metadata;
    size_t metadata_count;
    uint64_t data_start; /* file offset of the data buffer: 8 + header length */
    uint64_t data_size;
} st_header;

/* The dtype named `name`, or NULL. */
const st_dtype_info *st_dtype_lookup(const char *name);

/* Parses `len` bytes of header JSON describing a data buffer of `data_size` bytes. Pure: no
 * I/O, for the fuzzer and the unit tests. On success fills *out (free with st_header_free)
 * with data_start 0. Returns 0, or -1 with a message in err. */
int st_parse_header(const uint8_t *json, size_t len, uint64_t data_size, st_header *out,
                    char *err, size_t errlen);

/* Checks the 8-byte header length against the cap and the file size; returns 0 or -1. */
int st_check_header_length(uint64_t header_len, uint64_t file_size, char *err, size_t errlen);

/* Parses a whole file held in memory (the length prefix, the header, the data size). */
int st_parse_buffer(const uint8_t *file, size_t size, st_header *out, char *err, size_t errlen);

/* Reads and parses the header of `file` with exactly two reads: the 8-byte length and the
 * header itself (never the data: on a lazy mount no weight bytes are fetched). Errors are
 * prefixed with `path`. */
int st_read_header(loader_file *file, const char *path, st_header *out, char *err, size_t errlen);

/* The tensor called `name`, or NULL. */
const st_tensor *st_find(const st_header *header, const char *name);

/* Element count of a tensor (the shape was overflow-checked when parsed). */
uint64_t st_element_count(const st_tensor *tensor);

void st_header_free(st_header *header);

#endif
