#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int pread_full(int fd, void *buf, size_t len, uint64_t offset, char *err, size_t errlen)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0)
            return fail(err, errlen, "read at offset %llu failed: %s", (unsigned long long)offset,
                        strerror(errno));
        if (n == 0)
            return fail(err, errlen, "unexpected end of file at offset %llu (was the file "
                        "truncated?)", (unsigned long long)offset);
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

int write_full(int fd, const void *buf, size_t len, char *err, size_t errlen)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return fail(err, errlen, "write failed: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

char *join_location(const char *location, const char *name)
{
    size_t n = strlen(location);
    int slash = n > 0 && location[n - 1] != '/';
    size_t size = n + (size_t)slash + strlen(name) + 1;
    char *path = malloc(size);
    if (path) snprintf(path, size, "%s%s%s", location, slash ? "/" : "", name);
    return path;
}

char *read_small_file(const char *path, size_t max, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fail(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    char *text = NULL;
    if (fstat(fd, &st) != 0) {
        fail(err, errlen, "%s: %s", path, strerror(errno));
    } else if ((uint64_t)st.st_size > max) {
        fail(err, errlen, "%s: %lld bytes is more than the %zu allowed", path,
             (long long)st.st_size, max);
    } else if ((text = malloc((size_t)st.st_size + 1)) == NULL) {
        fail(err, errlen, "%s: out of memory", path);
    } else if (pread_full(fd, text, (size_t)st.st_size, 0, err, errlen) != 0) {
        free(text);
        text = NULL;
    } else {
        text[st.st_size] = '\0';
    }
    close(fd);
    return text;
}
