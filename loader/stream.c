/* Streaming a rank: its tensors handed out one at a time, in file order, as they land.
 *
 * At open the rank is planned whole, as loader_load plans it, and cut into groups of
 * consecutive tensors: each group is a rank of its own with its own arena, filling at least the
 * reader pool (threads × chunk bytes) unless one tensor is larger. The reads are built in file
 * order, so a group's reads are one run of the list, and announced to the source once. A
 * background thread fills the group the caller is in — the next group starts as soon as the
 * caller has been handed the last tensor of the one before — through the one target and its
 * staging ring. So the stream holds at most one group beyond what the caller keeps, and the
 * reads of a big tensor overlap the caller's work on the previous one. */
#include "rank.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct stream_group {
    loader_rank *rank;     /* the stream's reference; NULL once its last tensor is handed out */
    size_t first_job, end_job;
} stream_group;

struct loader_stream {
    rank_target *owner;
    job_list jobs;         /* every group's, in file order */
    stream_group *groups;
    size_t group_count;
    pthread_t filler;
    bool filler_started;
    atomic_bool cancel;
    pthread_mutex_t lock;  /* guards what follows; `changed` signals it changed */
    pthread_cond_t changed;
    size_t filled;         /* groups [0, filled) have landed */
    size_t current;        /* the group of the next tensor to hand out */
    size_t next_tensor;    /* its index in that group */
    bool failed;
    char err[LOADER_ERR_LEN];
};

static stream_group *add_group(loader_stream *s, char *err, size_t errlen)
{
    stream_group *grown = realloc(s->groups, (s->group_count + 1) * sizeof *grown);
    if (!grown) return fail(err, errlen, "out of memory"), NULL;
    s->groups = grown;
    stream_group *g = &s->groups[s->group_count];
    *g = (stream_group){rank_new(s->owner, err, errlen), s->jobs.count, s->jobs.count};
    if (!g->rank) return NULL;
    s->group_count++;
    return g;
}

/* Moves rt into r's tensors (freeing what rt holds when there is no room). */
static rank_tensor *keep_tensor(loader_rank *r, rank_tensor *rt, char *err, size_t errlen)
{
    rank_tensor *grown = realloc(r->tensors, (r->count + 1) * sizeof *grown);
    if (!grown) {
        free(rt->name);
        free(rt->shape);
        return fail(err, errlen, "out of memory"), NULL;
    }
    r->tensors = grown;
    r->tensors[r->count] = *rt;
    r->payload_bytes += rt->nbytes;
    return &r->tensors[r->count++];
}

/* Places tensor `index` at the end of the last group, or first in a new one when the last is
 * full, and appends its reads. */
static int plan_tensor(loader_stream *s, const loader_model *m, const tp_plan *plan,
                       const loader_options *o, size_t index, char *err, size_t errlen)
{
    stream_group *g = &s->groups[s->group_count - 1];
    uint64_t budget = (uint64_t)s->owner->threads * s->owner->chunk_bytes, end = g->rank->arena_bytes;
    rank_tensor rt = {0};
    tp_slice slice;
    if (rank_place_tensor(m, plan, o, index, &rt, &slice, &end, err, errlen) != 0) {
        free(rt.name);
        free(rt.shape);
        return -1;
    }
    if (g->rank->count > 0 && end > budget) {
        if (!(g = add_group(s, err, errlen))) {
            free(rt.name);
            free(rt.shape);
            return -1;
        }
        rt.arena_offset = 0;
        end = rt.nbytes;
    }
    const rank_tensor *kept = keep_tensor(g->rank, &rt, err, errlen);
    if (!kept) return -1;
    g->rank->arena_bytes = end;
    if (rank_add_tensor_jobs(&s->jobs, m, index, &slice, kept, s->owner->chunk_bytes, err, errlen) != 0)
        return -1;
    g->end_job = s->jobs.count;
    return 0;
}

static int plan_groups(loader_stream *s, const loader_model *m, const loader_options *o, char *err,
                       size_t errlen)
{
    if (m->count == 0) return 0;
    tp_plan plan;
    if (rank_resolve_plan(m, o, &plan, err, errlen) != 0) return -1;
    int rc = add_group(s, err, errlen) ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < m->count; i++) rc = plan_tensor(s, m, &plan, o, i, err, errlen);
    tp_plan_free(&plan);
    return rc;
}

/* Waits until the caller has reached group g; false when the stream is being closed. */
static bool wait_for_turn(loader_stream *s, size_t g)
{
    pthread_mutex_lock(&s->lock);
    while (s->current < g && !atomic_load(&s->cancel)) pthread_cond_wait(&s->changed, &s->lock);
    pthread_mutex_unlock(&s->lock);
    return !atomic_load(&s->cancel);
}

static void *fill_groups(void *arg)
{
    loader_stream *s = arg;
    char err[LOADER_ERR_LEN];
    for (size_t g = 0; g < s->group_count && wait_for_turn(s, g); g++) {
        stream_group *group = &s->groups[g];
        reader_config config = {s->owner->threads, NULL, NULL, true, &s->cancel};
        int rc = rank_fill(group->rank, s->jobs.jobs + group->first_job,
                           group->end_job - group->first_job, &config, err, sizeof err);
        pthread_mutex_lock(&s->lock);
        if (rc == 0) {
            s->filled = g + 1;
        } else {
            s->failed = true;
            snprintf(s->err, sizeof s->err, "%s", err);
        }
        pthread_cond_broadcast(&s->changed);
        pthread_mutex_unlock(&s->lock);
        if (rc != 0) break;
    }
    return NULL;
}

int loader_stream_open(const loader_model *model, const loader_options *options,
                       loader_stream **out, char *err, size_t errlen)
{
    *out = NULL;
    loader_stream *s = calloc(1, sizeof *s);
    if (!s) return fail(err, errlen, "out of memory");
    atomic_init(&s->cancel, false);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->changed, NULL);
    int rc = rank_target_open(model, options, &s->owner, err, errlen);
    if (rc == 0) rc = plan_groups(s, model, options, err, errlen);
    if (rc == 0) {
        reader_announce(s->jobs.jobs, s->jobs.count);
        s->filler_started = pthread_create(&s->filler, NULL, fill_groups, s) == 0;
        if (!s->filler_started) rc = fail(err, errlen, "cannot start the stream's reader thread");
    }
    if (rc != 0) {
        loader_stream_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

/* Hands out the next tensor of the current group (lock held; the group has landed). */
static void hand_out(loader_stream *s, loader_rank **rank, size_t *index)
{
    stream_group *g = &s->groups[s->current];
    *rank = loader_rank_retain(g->rank);
    *index = s->next_tensor++;
    if (s->next_tensor < g->rank->count) return;
    loader_rank_free(g->rank); /* the caller's reference keeps it */
    g->rank = NULL;
    s->current++;
    s->next_tensor = 0;
    pthread_cond_broadcast(&s->changed); /* the filler may start the next group */
}

int loader_stream_next(loader_stream *stream, loader_rank **rank, size_t *index, char *err,
                       size_t errlen)
{
    loader_stream *s = stream;
    *rank = NULL;
    *index = 0;
    pthread_mutex_lock(&s->lock);
    while (s->current < s->group_count && s->filled <= s->current && !s->failed)
        pthread_cond_wait(&s->changed, &s->lock);
    int rc = 0;
    if (s->current < s->group_count && s->filled > s->current) {
        hand_out(s, rank, index);
        rc = 1;
    } else if (s->failed) {
        rc = fail(err, errlen, "%s", s->err);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

void loader_stream_close(loader_stream *stream)
{
    loader_stream *s = stream;
    if (!s) return;
    pthread_mutex_lock(&s->lock);
    atomic_store(&s->cancel, true);
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    if (s->filler_started) pthread_join(s->filler, NULL);
    for (size_t g = 0; g < s->group_count; g++) loader_rank_free(s->groups[g].rank);
    free(s->groups);
    free(s->jobs.jobs);
    rank_target_release(s->owner);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->changed);
    free(s);
}
