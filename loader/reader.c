/* The reader pool. Each file first hears the ranges it will be read at (will_need: a source
 * may prefetch them), then threads take jobs in file order from a shared cursor, so a shard is
 * read front to back with `threads` explicit reads in flight (a lazy mount or a remote source
 * sees a deep, sequential queue). Memory is the target's staging buffers: bounded, whatever
 * the tensor sizes. */
#include "reader.h"
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct reader_state {
    read_job *jobs;
    size_t count;
    load_target *target;
    const reader_config *config;
    atomic_size_t next;
    atomic_bool failed;
    uint64_t total_bytes, done_bytes;
    pthread_mutex_t lock; /* guards done_bytes, the progress callback and the error */
    char err[1024];
} reader_state;

static int compare_jobs(const void *a, const void *b)
{
    const read_job *x = a, *y = b;
    if (x->shard != y->shard) return x->shard < y->shard ? -1 : 1;
    if (x->file_offset != y->file_offset) return x->file_offset < y->file_offset ? -1 : 1;
    return 0;
}

/* One will_need call per file with its jobs' ranges (jobs sorted, so a file's are adjacent
 * and in order). A hint: when out of memory, none is given. */
void reader_announce(const read_job *jobs, size_t count)
{
    loader_range *ranges = malloc((count ? count : 1) * sizeof *ranges);
    if (!ranges) return;
    for (size_t first = 0, end; first < count; first = end) {
        loader_file *file = jobs[first].file;
        for (end = first; end < count && jobs[end].file == file; end++)
            ranges[end - first] = (loader_range){jobs[end].file_offset, jobs[end].read_bytes};
        if (file->ops->will_need) file->ops->will_need(file, ranges, end - first);
    }
    free(ranges);
}

/* The first failure wins: "<file>: <what went wrong>", or just what when path is NULL. */
static void record_error(reader_state *s, const char *path, const char *what)
{
    pthread_mutex_lock(&s->lock);
    if (!atomic_load(&s->failed)) {
        s->err[0] = '\0';
        if (path) {
            strncat(s->err, path, sizeof s->err - 1);
            strncat(s->err, ": ", sizeof s->err - 1 - strlen(s->err));
        }
        strncat(s->err, what, sizeof s->err - 1 - strlen(s->err));
    }
    atomic_store(&s->failed, true);
    pthread_mutex_unlock(&s->lock);
}

static int read_bytes(const read_job *job, void *buf, char *err, size_t errlen)
{
    return job->file->ops->read_at(job->file, job->file_offset, buf, job->read_bytes, err, errlen);
}

static int run_job(reader_state *s, const read_job *job, char *err, size_t errlen)
{
    load_target *t = s->target;
    void *direct = job->contiguous ? t->direct(t, job->copy.dst_offset, job->read_bytes) : NULL;
    if (direct) return read_bytes(job, direct, err, errlen);
    if (job->read_bytes > t->staging_bytes)
        return fail(err, errlen, "internal error: a read of %zu bytes exceeds the %zu-byte staging",
                    job->read_bytes, t->staging_bytes);
    void *staging = t->staging_acquire(t, err, errlen);
    if (!staging) return -1;
    if (read_bytes(job, staging, err, errlen) != 0) {
        t->staging_release(t, staging);
        return -1;
    }
    return t->write(t, staging, &job->copy, err, errlen);
}

static void *reader_thread(void *arg)
{
    reader_state *s = arg;
    char err[1024];
    while (!atomic_load(&s->failed)) {
        if (s->config->cancel && atomic_load(s->config->cancel)) {
            record_error(s, NULL, "cancelled");
            break;
        }
        size_t i = atomic_fetch_add(&s->next, 1);
        if (i >= s->count) break;
        const read_job *job = &s->jobs[i];
        if (run_job(s, job, err, sizeof err) != 0) {
            record_error(s, job->path, err);
            break;
        }
        pthread_mutex_lock(&s->lock);
        s->done_bytes += (uint64_t)job->copy.width * job->copy.rows;
        if (s->config->progress)
            s->config->progress(s->config->progress_ctx, s->done_bytes, s->total_bytes);
        pthread_mutex_unlock(&s->lock);
    }
    return NULL;
}

int reader_run(read_job *jobs, size_t count, load_target *target, const reader_config *config,
               char *err, size_t errlen)
{
    if (count > 1) qsort(jobs, count, sizeof *jobs, compare_jobs);
    unsigned threads = config->threads ? config->threads : 1;
    reader_state s = {.jobs = jobs, .count = count, .target = target, .config = config};
    atomic_init(&s.next, 0);
    atomic_init(&s.failed, false);
    pthread_mutex_init(&s.lock, NULL);
    for (size_t i = 0; i < count; i++) s.total_bytes += (uint64_t)jobs[i].copy.width * jobs[i].copy.rows;
    if (!config->announced) reader_announce(jobs, count);
    pthread_t *ids = calloc(threads, sizeof *ids);
    unsigned started = 0;
    if (!ids) record_error(&s, NULL, "out of memory");
    for (; ids && started < threads; started++)
        if (pthread_create(&ids[started], NULL, reader_thread, &s) != 0) {
            record_error(&s, NULL, "cannot start a reader thread");
            break;
        }
    for (unsigned i = 0; i < started; i++) pthread_join(ids[i], NULL);
    free(ids);
    char finish_err[512];
    int finished = target->finish(target, finish_err, sizeof finish_err);
    if (finished != 0) record_error(&s, NULL, finish_err);
    pthread_mutex_destroy(&s.lock);
    if (atomic_load(&s.failed)) return fail(err, errlen, "%s", s.err);
    return 0;
}
