/* read_trace.c — tab-separated lines, buffered, flushed at least once a second. */
#include "read_trace.h"

#include "clock.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FLUSH_INTERVAL_NS 1000000000

struct read_trace {
    pthread_mutex_t lock;
    FILE *out;
    int64_t started_ns;          /* times in the trace count from here */
    int64_t flushed_ns;
    int failure;
};

int read_trace_open(const char *path, read_trace **out)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0644);
    if (fd < 0)
        return errno;
    read_trace *trace = calloc(1, sizeof *trace);
    FILE *stream = trace ? fdopen(fd, "a") : NULL;
    if (!stream) {
        int error = errno ? errno : ENOMEM;
        close(fd);
        free(trace);
        return error;
    }
    pthread_mutex_init(&trace->lock, NULL);
    trace->out = stream;
    trace->started_ns = trace->flushed_ns = monotonic_ns();
    fputs("# seconds\twaited_ms\trepo\tfile\toffset\tlength\tahead_bytes\tresult\ttensor\n", stream);
    *out = trace;
    return 0;
}

void read_trace_close(read_trace *trace)
{
    if (!trace)
        return;
    fclose(trace->out);
    pthread_mutex_destroy(&trace->lock);
    free(trace);
}

/* A field as is, but for what would break the line into fields or lines (a repo's file names and
 * tensor names are the repo author's choice): tab, newline, backslash and controls as \xHH. */
static void put_field(FILE *out, const char *text)
{
    for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
        if (*c < 0x20 || *c == 0x7f || *c == '\\')
            fprintf(out, "\\x%02x", *c);
        else
            putc(*c, out);
    }
}

int read_trace_write(read_trace *trace, const read_trace_entry *e)
{
    pthread_mutex_lock(&trace->lock);
    int stopped = 0;
    if (!trace->failure) {
        FILE *out = trace->out;
        fprintf(out, "%.6f\t%.3f\t", (double)(e->arrived_ns - trace->started_ns) / 1e9,
                (double)(e->answered_ns - e->arrived_ns) / 1e6);
        put_field(out, e->repo);
        putc('\t', out);
        put_field(out, e->path);
        fprintf(out, "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%s\t", e->offset, e->length, e->ahead_bytes,
                e->error ? strerrorname_np(e->error) : e->pushed ? "pushed" : "ok");
        put_field(out, e->tensor ? e->tensor : "-");
        putc('\n', out);
        if (e->answered_ns - trace->flushed_ns >= FLUSH_INTERVAL_NS) {
            fflush(out);
            trace->flushed_ns = e->answered_ns;
        }
        if (ferror(out))
            stopped = trace->failure = errno ? errno : EIO;
    }
    pthread_mutex_unlock(&trace->lock);
    return stopped;
}
