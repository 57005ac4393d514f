/* Writing a loaded rank as a safetensors file: the header (tensors packed back to back in
 * rank order, padded with spaces to 8 bytes as the reference writer does), then each
 * tensor's bytes copied back from the target through one bounded buffer.
 *
 * The file appears under its name only once complete: it is written to OUT.tmp.<pid>.<random>
 * in the same directory, created exclusively and never through a symlink (someone who can
 * write to that directory cannot make us truncate another file by planting a link at a
 * guessable name), removed on every failure, and renamed over OUT at the end. An existing
 * OUT is replaced; if it is a symlink, the link is replaced and its target left alone. The
 * mode is 0644 less the umask, as for any output file: weights are not secrets. */
#include "rank.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define COPY_BUFFER_BYTES (8u << 20)
#define TEMP_NAME_ATTEMPTS 16

typedef struct text {
    char *data;
    size_t len, cap;
    int failed;
} text;

__attribute__((format(printf, 2, 3))) static void append(text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (t->failed || n < 0) {
        t->failed = 1;
        return;
    }
    if (t->len + (size_t)n + 1 > t->cap) {
        size_t cap = (t->len + (size_t)n + 1) * 2;
        char *grown = realloc(t->data, cap);
        if (!grown) {
            t->failed = 1;
            return;
        }
        t->data = grown;
        t->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(t->data + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

static void append_json_string(text *t, const char *s)
{
    append(t, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') append(t, "\\%c", c);
        else if (c < 0x20) append(t, "\\u%04x", c);
        else append(t, "%c", c);
    }
    append(t, "\"");
}

static void build_header(const loader_rank *rank, text *t)
{
    append(t, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t offset = 0;
    for (size_t i = 0; i < rank->count; i++) {
        const rank_tensor *rt = &rank->tensors[i];
        append(t, ",");
        append_json_string(t, rt->name);
        append(t, ":{\"dtype\":\"%s\",\"shape\":[", rt->dtype->name);
        for (size_t d = 0; d < rt->ndim; d++)
            append(t, "%s%llu", d ? "," : "", (unsigned long long)rt->shape[d]);
        append(t, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
               (unsigned long long)(offset + rt->nbytes));
        offset += rt->nbytes;
    }
    append(t, "}");
    while (t->len % 8 != 0) append(t, " ");
}

static int write_tensors(const loader_rank *rank, int fd, char *err, size_t errlen)
{
    uint8_t *buffer = malloc(COPY_BUFFER_BYTES);
    if (!buffer) return fail(err, errlen, "out of memory");
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < rank->count; i++) {
        const rank_tensor *rt = &rank->tensors[i];
        for (uint64_t done = 0; rc == 0 && done < rt->nbytes;) {
            size_t n = rt->nbytes - done < COPY_BUFFER_BYTES ? (size_t)(rt->nbytes - done)
                                                             : COPY_BUFFER_BYTES;
            rc = loader_rank_read(rank, rt->arena_offset + done, buffer, n, err, errlen);
            if (rc == 0) rc = write_full(fd, buffer, n, err, errlen);
            done += n;
        }
    }
    free(buffer);
    return rc;
}

static uint64_t random_suffix(void)
{
    uint64_t value;
    if (getrandom(&value, sizeof value, GRND_NONBLOCK) == (ssize_t)sizeof value) return value;
    /* No entropy yet (early boot): exclusive creation still keeps us safe, only less quiet. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Creates a fresh temporary file next to `path`; returns its descriptor and *tmp (to free),
 * or -1 with a message. */
static int create_temp(const char *path, char **tmp, char *err, size_t errlen)
{
    size_t len = strlen(path) + 64;
    *tmp = malloc(len);
    if (!*tmp) return fail(err, errlen, "out of memory");
    int fd = -1;
    for (int attempt = 0; fd < 0 && attempt < TEMP_NAME_ATTEMPTS; attempt++) {
        snprintf(*tmp, len, "%s.tmp.%ld.%016llx", path, (long)getpid(),
                 (unsigned long long)random_suffix());
        fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        fail(err, errlen, "cannot create %s: %s", *tmp, strerror(errno));
        free(*tmp);
        *tmp = NULL;
    }
    return fd;
}

static int write_file(const loader_rank *rank, int fd, const text *header, char *err,
                      size_t errlen)
{
    uint8_t prefix[8];
    store_le64(prefix, header->len);
    if (write_full(fd, prefix, 8, err, errlen) != 0 ||
        write_full(fd, header->data, header->len, err, errlen) != 0 ||
        write_tensors(rank, fd, err, errlen) != 0)
        return -1;
    return 0;
}

int loader_rank_save(const loader_rank *rank, const char *path, char *err, size_t errlen)
{
    text header = {0};
    build_header(rank, &header);
    if (header.failed) {
        free(header.data);
        return fail(err, errlen, "out of memory building the header");
    }
    char why[LOADER_ERR_LEN], *tmp;
    int fd = create_temp(path, &tmp, why, sizeof why), rc = fd < 0 ? -1 : 0;
    if (rc == 0) {
        rc = write_file(rank, fd, &header, why, sizeof why);
        if (close(fd) != 0 && rc == 0)
            rc = fail(why, sizeof why, "closing %s: %s", tmp, strerror(errno));
        if (rc == 0 && rename(tmp, path) != 0)
            rc = fail(why, sizeof why, "renaming %s: %s", tmp, strerror(errno));
        if (rc != 0) unlink(tmp);
    }
    if (rc != 0) fail(err, errlen, "cannot save %s: %s", path, why);
    free(tmp);
    free(header.data);
    return rc;
}
