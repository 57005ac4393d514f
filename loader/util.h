/* util.h — small helpers shared by the loader's files (private). */
#ifndef HUBFS_LOADER_UTIL_H
#define HUBFS_LOADER_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Formats a message into err (when given) and returns -1, so that `return fail(...)` reads. */
int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static inline void store_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Reads exactly len bytes at offset (retrying short reads and EINTR). 0 or -1. */
int pread_full(int fd, void *buf, size_t len, uint64_t offset, char *err, size_t errlen);

/* Writes exactly len bytes. 0 or -1. */
int write_full(int fd, const void *buf, size_t len, char *err, size_t errlen);

/* "<location>/<name>", or name alone when location is "" (see loader_source.location);
 * NULL when out of memory. */
char *join_location(const char *location, const char *name);

/* Reads a whole (small) file into a NUL-terminated buffer, refusing more than max bytes. */
char *read_small_file(const char *path, size_t max, char *err, size_t errlen);

#endif
