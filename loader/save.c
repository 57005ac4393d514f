/* Writing a loaded rank as a safetensors file: the header (tensors packed back to back in
 * rank order, padded with spaces to 8 bytes as the reference writer does), then each
 * tensor's bytes copied back from the target through one bounded buffer. The file appears
 * under its name only once complete. */
#include "rank.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COPY_BUFFER_BYTES (8u << 20)

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
            rc = rank->target->read_back(rank->target, rt->arena_offset + done, buffer, n, err, errlen);
            if (rc == 0) rc = write_full(fd, buffer, n, err, errlen);
            done += n;
        }
    }
    free(buffer);
    return rc;
}

int loader_rank_save(const loader_rank *rank, const char *path, char *err, size_t errlen)
{
    text header = {0};
    build_header(rank, &header);
    if (header.failed) {
        free(header.data);
        return fail(err, errlen, "out of memory building the header");
    }
    size_t tmp_len = strlen(path) + 32;
    char *tmp = malloc(tmp_len);
    if (!tmp) {
        free(header.data);
        return fail(err, errlen, "out of memory");
    }
    snprintf(tmp, tmp_len, "%s.tmp.%ld", path, (long)getpid());
    int rc = -1, fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    char why[LOADER_ERR_LEN];
    uint8_t prefix[8];
    store_le64(prefix, header.len);
    if (fd < 0) {
        snprintf(why, sizeof why, "%s", strerror(errno));
    } else if (write_full(fd, prefix, 8, why, sizeof why) == 0 &&
               write_full(fd, header.data, header.len, why, sizeof why) == 0 &&
               write_tensors(rank, fd, why, sizeof why) == 0) {
        rc = 0;
    }
    if (fd >= 0 && close(fd) != 0 && rc == 0) {
        snprintf(why, sizeof why, "%s", strerror(errno));
        rc = -1;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        snprintf(why, sizeof why, "%s", strerror(errno));
        rc = -1;
    }
    if (rc != 0) {
        unlink(tmp);
        fail(err, errlen, "cannot save %s: %s", path, why);
    }
    free(tmp);
    free(header.data);
    return rc;
}
