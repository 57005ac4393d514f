/* reader.c — read requests: plan, claim, wait as block waiters, answer from any thread. */
#include "reader.h"

#include "clock.h"
#include "log.h"
#include "page_push.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

/* Runs are fetched in parts of this size: one block's latency isn't one stream's. */
#define RUN_PART_BYTES (2u << 20)
/* A large range (a stream's window, a tensor's rest) is split among about this many requests,
 * in parts of up to a block: over a link with a first-byte delay a request's fixed cost is paid
 * per part (2 MiB at 40 MB/s and 20 ms: 28 % of it; 8 MiB: 9 %). */
#define RANGE_SPREAD 16

static uint64_t range_bytes(plan_range range) { return range.end > range.begin ? range.end - range.begin : 0; }

static size_t part_bytes_for(uint64_t range_bytes, uint64_t block_size)
{
    uint64_t part = range_bytes / RANGE_SPREAD;
    part = part > block_size ? block_size : part;
    return part > RUN_PART_BYTES ? (size_t)part : RUN_PART_BYTES;
}
#define CLAIM_RUNS_MAX 64
/* Hinted bytes kept scheduled ahead of what was not yet claimed for lack of budget. */
#define MAX_PENDING_HINTS 65536
/* A read answered from memory first pushes the bytes after it that are in memory too into the
 * kernel's page cache (page_push.h), up to this far: under the planner's forward slack (1 MiB),
 * so the read after them still continues its stream. The kernel asks at most 128 KiB per read
 * and a page-faulting loader less: from_pretrained of a 3 GB model over loopback sent 24,000
 * reads without pushes and 5,000 with them (bench, alternating runs: 6-16 % less CPU per GB). */
#define PUSH_AHEAD_BYTES (768u << 10)
/* Only for a stream that has read this much in order: a touch of a tensor's first bytes (a shape
 * query, a meta-device load) gets nothing it would not read. */
#define PUSH_EVIDENCE_BYTES (256u << 10)
/* A push may wait for pages a request of the kernel is filling, which another FUSE thread
 * answers: at most this many push at once, so that others are always left (libfuse runs 64). */
#define MAX_PUSHING_THREADS 8
/* After a read fails (its retry budget spent), the kernel asks its first page again at once, on
 * the same handle (read-ahead failed, so it reads the page itself): within this long, that repeat
 * gets the same answer, not a second retry budget (an endless stall took twice the budget to EIO). */
#define FAILED_READ_REPEAT_NS 1000000000

struct open_file {
    fs_context *context;
    remote_file *file;
    uint64_t ino;                /* the kernel's name of the file, for pushes */
    pthread_mutex_t lock;        /* guards streams and the hints */
    planner_streams streams;
    reader_hint *hints;          /* hinted ranges not yet scheduled, sorted */
    size_t hint_count, hint_next;
    uint64_t read_end;           /* the furthest byte its reads reached */
    bool hinted;                 /* it announced its reads: no speculation beyond them */
    struct {                     /* its last failed read, for the kernel's repeat */
        pthread_mutex_t lock;    /* apart: a failure may be answered under the lock above */
        uint64_t begin, end;
        int64_t at_ns;
        int error;
    } failed;
};

typedef struct read_request read_request;

static void fetch_header(remote_file *file, int depth);
static void warm_next_shard(remote_file *reading);

/* The part of a read that lies in one block. */
typedef struct request_part {
    block_waiter waiter;         /* first: on_ready gets &waiter */
    read_request *owner;
    block *blk;
    size_t from, to;             /* bytes within the block */
    bool retried;
} request_part;

struct read_request {
    fuse_req_t req;
    /* What follows the reply uses these, not the handle: once the reply is out, the file may be
     * released and its handle freed (until then the kernel keeps it open). */
    fs_context *context;
    remote_file *file;
    open_file *handle;
    uint64_t offset;
    size_t length;
    bool uncounted;              /* planned without the tensor map: counted once answered */
    int64_t arrived_ns;          /* with --trace-reads only */
    uint64_t ahead_bytes;        /* with --trace-reads only: speculation the read asked for */
    /* Waiters not yet fired, plus one held by whoever is still working on the request: the
     * thread that takes it to zero answers. */
    atomic_int pending;
    atomic_int error;
    atomic_bool answered;
    size_t part_count;
    request_part parts[];
};

int reader_open(fs_context *context, fs_node *node, bool daemon_reads, open_file **out)
{
    open_file *handle = calloc(1, sizeof *handle);
    if (!handle)
        return ENOMEM;
    handle->context = context;
    handle->file = node->file;
    handle->ino = node->ino;
    pthread_mutex_init(&handle->lock, NULL);
    pthread_mutex_init(&handle->failed.lock, NULL);
    planner_streams_init(&handle->streams);
    remote_file_opened(node->file);
    if (daemon_reads)   /* the kernel reading the cached file itself needs no plan */
        fetch_header(node->file, 0);
    warm_next_shard(node->file);
    *out = handle;
    return 0;
}

void reader_close(open_file *handle)
{
    if (handle->hinted)
        atomic_fetch_sub(&handle->context->hinted_handles, 1);
    remote_file_closed(handle->file);
    pthread_mutex_destroy(&handle->lock);
    pthread_mutex_destroy(&handle->failed.lock);
    free(handle->hints);
    free(handle);
}

/* ---- claiming ------------------------------------------------------------------------------ */

/* Claims what is missing of bytes [begin, end) of the file and has it loaded: from local copies
 * at once when try_local (a reader waits), else by the fetch threads at priority. Returns false
 * when read-ahead (within_budget) was refused memory. */
static bool schedule_range(remote_file *file, uint64_t begin, uint64_t end, fetch_priority priority,
                           bool within_budget, bool try_local)
{
    fs_context *context = file->context;
    uint64_t block_size = block_cache_block_size(context->blocks);
    bool all_claimed = true;
    if (end > file->source.size)
        end = file->source.size;
    size_t part_bytes = end > begin ? part_bytes_for(end - begin, block_size) : RUN_PART_BYTES;
    for (uint64_t at = begin; at < end;) {
        uint64_t index = at / block_size, in_block = at % block_size;
        uint64_t to = end - at < block_size - in_block ? in_block + (end - at) : block_size;
        block *blk;
        if (block_cache_get(context->blocks, &file->source, index, &blk) != 0)
            return false;
        page_run runs[CLAIM_RUNS_MAX];
        size_t count = block_cache_claim(context->blocks, blk, in_block, to, within_budget, part_bytes, runs,
                                         CLAIM_RUNS_MAX);
        for (size_t i = 0; i < count; i++) {
            if (try_local && remote_file_load_local(file, &runs[i]))
                block_cache_complete(context->blocks, &runs[i], 0);
            else
                fetcher_submit(context->fetch_pool, &runs[i], priority);
        }
        /* Refused, not merely claimed by another (a stream's read-ahead inside a tensor's rest):
         * that stopped a rest at its first part in flight, and its far half was read page by page. */
        if (within_budget && !block_cache_covered(context->blocks, blk, in_block, to))
            all_claimed = false;
        block_cache_put(context->blocks, blk);
        at = index * block_size + to;
    }
    return all_claimed;
}

/* Speculation skips what the kernel was already answered (its page cache has it); large parts
 * are widened to whole units of the persistent cache, which stores only whole units: a few KiB
 * more now saves a request on every later mount. */
static bool schedule_speculative(remote_file *file, plan_range range, fetch_priority priority)
{
    uint64_t from, to;
    for (uint64_t at = range.begin; remote_file_next_unserved(file, at, range.end, &from, &to); at = to) {
        uint64_t begin = from, end = to;
        if (end - begin >= 16 * DISK_CACHE_UNIT) {
            begin -= begin % DISK_CACHE_UNIT;
            end += (DISK_CACHE_UNIT - end % DISK_CACHE_UNIT) % DISK_CACHE_UNIT;
        }
        if (!schedule_range(file, begin, end, priority, true, false))
            return false;   /* no room: the rest would be refused too */
    }
    return true;
}

/* Hinted bytes scheduled ahead of the handle's reads: a loader reads its plan in file order, so
 * this keeps its link busy while memory holds only a window of the plan, however many ranks
 * share the mount. */
#define HINT_MEMORY (128u << 20)   /* shared by every handle that announced its reads */
#define HINT_WINDOW_MIN (4u << 20)
/* Before its first read a handle gets only this much: a loader announces every shard's plan at
 * once and then reads the shards one after another. */
#define HINT_HEAD_START (2u << 20)

/* A hinted handle's window: its share of HINT_MEMORY (eight ranks of four shards each get 4 MiB,
 * one rank alone 32 MiB), so that memory stays bounded however many ranks share the mount. */
static uint64_t hint_window(open_file *handle)
{
    int sharing = atomic_load(&handle->context->hinted_handles);
    uint64_t share = HINT_MEMORY / (uint64_t)(sharing > 0 ? sharing : 1);
    return share > HINT_WINDOW_MIN ? share : HINT_WINDOW_MIN;
}

/* Schedules hinted ranges within the window ahead of the reads, until the budget refuses one.
 * The handle's lock is held. */
static void pump_hints(open_file *handle)
{
    if (handle->hint_next >= handle->hint_count)
        return;   /* nothing announced: no counters to read on every read */
    fetcher_counters fetches;
    block_cache_counters memory;
    fetcher_get_counters(handle->context->fetch_pool, &fetches);
    block_cache_get_counters(handle->context->blocks, &memory);
    /* Mount-wide, what hints already hold ahead of every reader: runs queued, bytes unread.
     * Each queued run counts as a whole part (RUN_PART_BYTES) though a slice's runs are often
     * smaller: counting their bytes exactly (the fetcher's queued_bytes) let more runs queue
     * ahead of the reader, and a rank load over a 20 ms link took 5.5-8.8 s instead of 4.0-4.4
     * (3 runs each). */
    uint64_t held = fetches.queued[FETCH_BACKGROUND] * RUN_PART_BYTES + memory.unread_bytes;
    uint64_t allowance = held < HINT_MEMORY ? HINT_MEMORY - held : 0;
    while (handle->hint_next < handle->hint_count && allowance > 0) {
        reader_hint *hint = &handle->hints[handle->hint_next];
        uint64_t from = handle->read_end > hint->offset ? handle->read_end : hint->offset;
        uint64_t limit = from + (handle->read_end ? hint_window(handle) : HINT_HEAD_START);
        uint64_t end = hint->offset + hint->length;
        if (hint->offset >= limit)
            return;
        uint64_t stop = end < limit ? end : limit;
        if (stop - hint->offset > allowance)
            stop = hint->offset + allowance;
        /* Pages another rank's reads already took are in the shared page cache: skipped. */
        if (!schedule_speculative(handle->file, (plan_range){hint->offset, stop}, FETCH_BACKGROUND))
            return;
        allowance -= stop - hint->offset;
        hint->length = end - stop;   /* what is left of it for a later pump */
        hint->offset = stop;
        if (hint->length == 0)
            handle->hint_next++;
    }
}

/* Schedules tensors handed out for prefetch; those the budget has no room for go back to the
 * planner, to be handed out again once there is (else they count as prefetched and unread
 * forever, and the reader fetches them on demand). */
static void schedule_prefetch(remote_file *file, const plan_range *ranges, size_t count)
{
    bool room = true;
    for (size_t i = 0; i < count; i++) {
        room = room && schedule_speculative(file, ranges[i], FETCH_BACKGROUND);
        if (!room)
            remote_file_prefetch_refused(file, ranges[i]);
    }
}

/* Whole tensors read from two of a shard's: the reader loads the model, and goes on to the next
 * shard once this one is done. That shard's first window starts coming now rather than when the
 * reader gets there (the link has room for it): the tensors it will visit first there, by the
 * repo's layer pattern, or the first ones in file order when it reads in file order. With
 * neither, nothing: a shard stored in name order and read in module order (transformers on a
 * checkpoint of the safetensors package) had its first window in file order (layers.10 before
 * layers.7) wait unread in memory for seconds, and its load over a 20 ms link took 17 s instead
 * of 12. Only the next shard's: a window for every other open shard at once held up to three
 * eighths of the memory budget unread until the reader came, room its own prefetch lacked. */
#define BULK_EVIDENCE_TENSORS 2
/* The next shard's first window: an eighth of the memory budget, at most 64 MiB. */
#define BULK_START_WINDOW_MAX (64u << 20)
#define BULK_START_BUDGET_SHARE 8
#define BULK_RANGES_MAX 64

/* A copy of the repo's layer pattern (taken under its lock: the other files' locks are taken
 * after), or NULL when none is learnt. */
static planner_pattern *copy_pattern(fs_repo *repo)
{
    pthread_mutex_lock(&repo->pattern_lock);
    planner_pattern *copy = repo->pattern && repo->pattern->role_count ? malloc(sizeof *copy) : NULL;
    if (copy)
        *copy = *repo->pattern;
    pthread_mutex_unlock(&repo->pattern_lock);
    return copy;
}

/* A repo read whole has the shard after the one being read resolved and its head fetched now:
 * a loader or `cat` goes through the shards one after the other, and each opening paid the
 * /resolve round trip, the header's, and one per read of the first tensor's first 512 KiB (the
 * evidence that it is read whole) before its read-ahead began: over the WAN profile 100-250 ms a
 * shard, on the Hub (redirects, more distant) more. Within the budget, behind every other fetch;
 * the shard's open finds its head in memory. Only along a run of shards from the first: one
 * shard read whole by itself (a `cat` of the third) is no sign that the fourth comes next. */
#define NEXT_SHARD_HEAD_BYTES (4u << 20)

static void warm_next_shard(remote_file *reading)
{
    if (!reading->is_safetensors || !atomic_load(&reading->repo->bulk_reading))
        return;
    bool reading_first;
    remote_file *next = namespace_next_shard(reading->context->names, reading->source.id, &reading_first);
    if (!next || next->repo != reading->repo || !(reading_first || atomic_load(&reading->head_warmed)))
        return;
    uint64_t probe_end = remote_file_header_probe_end(next);
    if (!probe_end)
        return;   /* its header is known or on its way (it was opened) */
    uint64_t head = next->source.size < NEXT_SHARD_HEAD_BYTES ? next->source.size : NEXT_SHARD_HEAD_BYTES;
    atomic_store(&next->head_warmed, true);
    schedule_range(next, 0, probe_end > head ? probe_end : head, FETCH_BACKGROUND, true, false);
}

/* False while no order to start the next shard's window along is known (nor a next shard). */
static bool start_next_shard(remote_file *reading)
{
    fs_context *context = reading->context;
    bool reading_first;
    remote_file *next = namespace_next_shard(context->names, reading->source.id, &reading_first);
    if (!next || next->repo != reading->repo || !next->is_safetensors)
        return true;   /* nothing to start, now or later */
    planner_pattern *pattern = copy_pattern(reading->repo);
    if (!pattern && !remote_file_follows_file_order(reading))
        return false;
    uint64_t window = context->options.memory_budget / BULK_START_BUDGET_SHARE;
    if (window > BULK_START_WINDOW_MAX)
        window = BULK_START_WINDOW_MAX;
    plan_range ranges[BULK_RANGES_MAX];
    /* A shard not open yet hands out nothing (its map is unknown): its head comes instead. */
    size_t n = remote_file_bulk_ranges(next, pattern, window, ranges, BULK_RANGES_MAX);
    schedule_prefetch(next, ranges, n);
    free(pattern);
    return true;
}

static void schedule_plan(open_file *handle, const read_plan *plan)
{
    remote_file *file = handle->file;
    /* Once per file: two readers racing here would each hand the next shard's window out. A
     * start put off for want of an order is tried again at every read until the order shows:
     * reads that plan a prefetch can be few (one in a shard `cat` read, before its order was
     * known), and the next shard's head then came only at its open. */
    if ((plan->prefetch_count || atomic_load(&file->next_deferred)) && !atomic_load(&file->next_started) &&
        remote_file_whole_tensors(file) >= BULK_EVIDENCE_TENSORS && !atomic_exchange(&file->next_started, true)) {
        bool started = start_next_shard(file);
        atomic_store(&file->next_deferred, !started);
        if (started) {
            atomic_store(&file->repo->bulk_reading, true);
            warm_next_shard(file);
        } else {
            atomic_store(&file->next_started, false);
        }
    }
    if (plan->ahead.end > plan->ahead.begin)
        schedule_speculative(file, plan->ahead, FETCH_AHEAD);
    if (plan->rest.end > plan->rest.begin)
        schedule_speculative(file, plan->rest, FETCH_AHEAD);
    schedule_prefetch(file, plan->prefetch, plan->prefetch_count);
}

/* ---- the header, fetched at open -------------------------------------------------------- */

/* Watches the arrival of the header bytes asked for at open. */
typedef struct header_watch {
    block_waiter waiter;         /* first: on_ready gets &waiter */
    remote_file *file;
    int depth;
} header_watch;

static void on_header_bytes(block_waiter *waiter, int error)
{
    header_watch *watch = (header_watch *)waiter;
    remote_file *file = watch->file;
    int depth = watch->depth;
    /* Learnt while the block is pinned: served pages of an unpinned block may go at once. */
    if (!error)
        remote_file_learn_header(file);
    block_cache_put(file->context->blocks, watch->waiter.blk);
    free(watch);
    remote_file_header_fetch_over(file);
    if (!error)
        fetch_header(file, depth + 1);   /* the rest of a header longer than the probe */
}

/* Asks for what the planner lacks of a safetensors header (the probe, then the rest), without
 * waiting: a tool that opens a shard and reads a slice at once finds the map known. */
static void fetch_header(remote_file *file, int depth)
{
    uint64_t begin, end;
    if (depth > 2 || !remote_file_header_fetch_start(file, &begin, &end))
        return;
    /* Speculative (nobody reads yet): within the memory budget, as read-ahead is. */
    schedule_range(file, begin, end, FETCH_DEMAND, true, true);
    block_cache *blocks = file->context->blocks;
    uint64_t block_size = block_cache_block_size(blocks), index = (end - 1) / block_size;
    header_watch *watch = calloc(1, sizeof *watch);
    block *blk = NULL;
    if (!watch || block_cache_get(blocks, &file->source, index, &blk) != 0) {
        free(watch);
        remote_file_header_fetch_over(file);
        return;
    }
    *watch = (header_watch){.waiter = {.on_ready = on_header_bytes}, .file = file, .depth = depth};
    uint64_t from = begin > index * block_size ? begin - index * block_size : 0;
    int waiting = block_cache_wait(blocks, blk, from, end - index * block_size, &watch->waiter);
    if (waiting == 1) {
        watch->waiter.blk = blk;
        on_header_bytes(&watch->waiter, 0);
    } else if (waiting < 0) {
        block_cache_put(blocks, blk);
        free(watch);
        remote_file_header_fetch_over(file);
    }
}

/* ---- answering ------------------------------------------------------------------------------ */

/* Its pages were noted at arrival; the blocks learn it once the reply no longer needs them. */
static void mark_blocks_served(read_request *rq)
{
    for (size_t i = 0; i < rq->part_count; i++)
        block_cache_mark_served(rq->context->blocks, rq->parts[i].blk, rq->parts[i].from, rq->parts[i].to);
}

static void reply_with_bytes(read_request *rq)
{
    struct iovec stack_iov[4];
    struct iovec *iov = rq->part_count <= 4 ? stack_iov : malloc(rq->part_count * sizeof *iov);
    if (!iov) {
        fuse_reply_err(rq->req, ENOMEM);
        return;
    }
    for (size_t i = 0; i < rq->part_count; i++) {
        const request_part *part = &rq->parts[i];
        iov[i] = (struct iovec){.iov_base = (void *)(block_data(part->blk) + part->from),
                                .iov_len = part->to - part->from};
    }
    /* Counted before the reply: a reader that sees its bytes and then asks for the stats finds
     * them counted. */
    remote_file_count_served(rq->file, rq->length);
    fuse_reply_iov(rq->req, iov, (int)rq->part_count);
    if (iov != stack_iov)
        free(iov);
    mark_blocks_served(rq);
}

static void remember_failure(open_file *handle, uint64_t offset, size_t length, int error)
{
    pthread_mutex_lock(&handle->failed.lock);
    handle->failed.begin = offset;
    handle->failed.end = offset + length;
    handle->failed.at_ns = monotonic_ns();
    handle->failed.error = error;
    pthread_mutex_unlock(&handle->failed.lock);
}

/* The error of the handle's last failed read when this read lies within it and came right after;
 * else 0. */
static int repeated_failure(open_file *handle, uint64_t offset, size_t length)
{
    pthread_mutex_lock(&handle->failed.lock);
    int error = handle->failed.error;
    if (offset < handle->failed.begin || offset + length > handle->failed.end ||
        monotonic_ns() - handle->failed.at_ns >= FAILED_READ_REPEAT_NS)
        error = 0;
    pthread_mutex_unlock(&handle->failed.lock);
    return error;
}

#define TRACE_TENSOR_MAX 256

/* tensor: what lies at offset, named before the read was answered (a reader that has its bytes
 * may close the file, and the tensor map goes with the last close). */
static void trace_line(remote_file *file, uint64_t offset, size_t length, int64_t arrived_ns, uint64_t ahead_bytes,
                       int error, bool pushed, const char *tensor)
{
    read_trace_entry entry = {.repo = file->repo->display_name, .path = file->path, .tensor = tensor,
                              .offset = offset, .length = length, .arrived_ns = arrived_ns,
                              .answered_ns = monotonic_ns(), .ahead_bytes = ahead_bytes, .error = error,
                              .pushed = pushed};
    int stopped = read_trace_write(file->context->trace, &entry);
    if (stopped)
        fs_log("--trace-reads stopped: %s (the mount goes on without it)", strerror(stopped));
}

static void free_request(read_request *rq)
{
    block_cache *blocks = rq->context->blocks;
    for (size_t i = 0; i < rq->part_count; i++)
        if (rq->parts[i].blk)
            block_cache_put(blocks, rq->parts[i].blk);
    free(rq);
}

/* Answers once. Inside the interrupt callback libfuse holds the request's lock: unregistering
 * the callback there would deadlock, and it is not needed (libfuse calls it only once). */
static void answer(read_request *rq, bool in_interrupt)
{
    if (atomic_exchange(&rq->answered, true))
        return;
    if (!in_interrupt)   /* waits out an interrupt callback running now; none comes later */
        fuse_req_interrupt_func(rq->req, NULL, NULL);
    int error = atomic_load(&rq->error);
    remote_file *file = rq->file;
    bool touched_header = !error && file->is_safetensors && rq->offset < rq->context->planner.header_probe;
    /* Learnt before its blocks are put (the served pages of an unpinned block may go at once, and
     * the header would be fetched again); before the reply when the trace names the read by it. */
    bool learn_first = touched_header && rq->context->trace;
    if (learn_first)
        remote_file_learn_header(file);
    char tensor[TRACE_TENSOR_MAX];
    if (rq->context->trace)
        remote_file_describe_offset(file, rq->offset, tensor, sizeof tensor);
    if (error) {
        if (error == EINTR)
            atomic_fetch_add(&rq->context->stats.reads_interrupted, 1);
        else
            remember_failure(rq->handle, rq->offset, rq->length, error);
        fuse_reply_err(rq->req, error);
    } else {
        reply_with_bytes(rq);
    }
    if (touched_header && !learn_first)
        remote_file_learn_header(file);
    if (rq->context->trace)
        trace_line(file, rq->offset, rq->length, rq->arrived_ns, rq->ahead_bytes, error, false, tensor);
    bool count = rq->uncounted && !error;
    uint64_t offset = rq->offset, length = rq->length;
    free_request(rq);
    if (count)
        remote_file_count_read(file, offset, length);
}

static void drop_pending(read_request *rq, bool in_interrupt)
{
    if (atomic_fetch_sub(&rq->pending, 1) == 1)
        answer(rq, in_interrupt);
}

static void set_error(read_request *rq, int error)
{
    int none = 0;
    atomic_compare_exchange_strong(&rq->error, &none, error);
}

/* A failure in transit of a fetch the part joined late gets the part one fetch of its own.
 * Returns whether it waits again; else *error is the part's outcome. */
static bool retry_part(request_part *part, int *error)
{
    if (part->retried || !part->waiter.joined_late || *error == EACCES || *error == ENOMEM || *error == ECANCELED)
        return false;
    part->retried = true;
    read_request *rq = part->owner;
    block_cache *blocks = rq->context->blocks;
    uint64_t block_start = block_index(part->blk) * block_cache_block_size(blocks);
    schedule_range(rq->file, block_start + part->from, block_start + part->to, FETCH_DEMAND, false, true);
    int waiting = block_cache_wait(blocks, part->blk, part->from, part->to, &part->waiter);
    *error = waiting < 0 ? -waiting : 0;
    return waiting == 0;   /* registered: from here on, part may be answered and freed */
}

static void on_part_ready(block_waiter *waiter, int error)
{
    request_part *part = (request_part *)waiter;
    read_request *rq = part->owner;
    if (error && retry_part(part, &error))
        return;
    if (error)
        set_error(rq, error);
    drop_pending(rq, false);
}

static void on_interrupt(fuse_req_t req, void *data)
{
    (void)req;
    read_request *rq = data;
    block_cache *blocks = rq->context->blocks;
    atomic_fetch_add(&rq->pending, 1);   /* rq stays ours until this hold is dropped */
    for (size_t i = 0; i < rq->part_count; i++) {
        if (!block_cache_cancel_wait(blocks, &rq->parts[i].waiter))
            continue;
        set_error(rq, EINTR);
        atomic_fetch_sub(&rq->pending, 1);   /* the hold above keeps it from reaching zero */
    }
    drop_pending(rq, true);
}

/* ---- the read path ------------------------------------------------------------------------- */

static read_request *new_request(open_file *handle, fuse_req_t req, uint64_t offset, size_t length)
{
    uint64_t block_size = block_cache_block_size(handle->context->blocks);
    size_t parts = (size_t)((offset + length - 1) / block_size - offset / block_size + 1);
    read_request *rq = calloc(1, sizeof *rq + parts * sizeof rq->parts[0]);
    if (!rq)
        return NULL;
    *rq = (read_request){.req = req, .context = handle->context, .file = handle->file, .handle = handle,
                         .offset = offset, .length = length};
    for (uint64_t at = offset; at < offset + length; rq->part_count++) {
        request_part *part = &rq->parts[rq->part_count];
        uint64_t index = at / block_size, in_block = at % block_size;
        uint64_t n = offset + length - at < block_size - in_block ? offset + length - at : block_size - in_block;
        *part = (request_part){.owner = rq, .from = in_block, .to = in_block + n};
        part->waiter.on_ready = on_part_ready;
        if (block_cache_get(handle->context->blocks, &handle->file->source, index, &part->blk) != 0) {
            free_request(rq);
            return NULL;
        }
        at += n;
    }
    return rq;
}

/* Registers the part as a waiter (or finds it present). Returns whether it waits, or a negative errno. */
static int wait_for_part(open_file *handle, read_request *rq, request_part *part, uint64_t block_start)
{
    block_cache *blocks = handle->context->blocks;
    int failure = EIO;
    for (int attempt = 0; attempt < 3; attempt++) {
        atomic_fetch_add(&rq->pending, 1);
        int waiting = block_cache_wait(blocks, part->blk, part->from, part->to, &part->waiter);
        if (waiting == 0)
            return 1;
        atomic_fetch_sub(&rq->pending, 1);
        if (waiting == 1)
            return 0;
        failure = -waiting;
        /* A fetch of its pages failed meanwhile: claim them again. */
        schedule_range(handle->file, block_start + part->from, block_start + part->to, FETCH_DEMAND, false, true);
    }
    /* A refusal (gated, bad token) or lack of memory says so; anything else failed in transit. */
    return -(failure == EACCES || failure == ENOMEM ? failure : EIO);
}

static atomic_int pushing_threads;

/* Pushes what follows a read of a stream reading in order; the pushed bytes count as read by
 * the stream (so the read after them continues it, and its read-ahead keeps growing). */
static void push_following(open_file *handle, const read_plan *plan, uint64_t read_end)
{
    if (plan->in_order_bytes < PUSH_EVIDENCE_BYTES || !handle->context->session)
        return;
    if (atomic_fetch_add(&pushing_threads, 1) >= MAX_PUSHING_THREADS) {
        atomic_fetch_sub(&pushing_threads, 1);
        return;
    }
    remote_file *file = handle->file;
    fs_context *context = handle->context;
    uint64_t from = (read_end + BLOCK_PAGE_SIZE - 1) / BLOCK_PAGE_SIZE * BLOCK_PAGE_SIZE;
    int64_t started_ns = context->trace ? monotonic_ns() : 0;
    uint64_t pushed = page_push(file, handle->ino, from, PUSH_AHEAD_BYTES);
    atomic_fetch_sub(&pushing_threads, 1);
    if (!pushed)
        return;
    read_plan after;
    pthread_mutex_lock(&handle->lock);
    remote_file_plan_read(file, &handle->streams, from, pushed, &after);
    bool hinted = handle->hinted;
    pthread_mutex_unlock(&handle->lock);
    if (!hinted)
        schedule_plan(handle, &after);
    if (context->trace) {
        char tensor[TRACE_TENSOR_MAX];
        remote_file_describe_offset(file, from, tensor, sizeof tensor);
        trace_line(file, from, pushed, started_ns, hinted ? 0 : range_bytes(after.ahead) + range_bytes(after.rest), 0,
                   true, tensor);
    }
}

void reader_read(open_file *handle, fuse_req_t req, uint64_t offset, size_t size)
{
    remote_file *file = handle->file;
    fs_context *context = handle->context;
    int64_t arrived_ns = context->trace ? monotonic_ns() : 0;
    atomic_fetch_add(&context->stats.reads, 1);
    atomic_fetch_add(&file->repo->stats->reads, 1);
    if (offset >= file->source.size || size == 0) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    size_t length = size < file->source.size - offset ? size : (size_t)(file->source.size - offset);
    /* Noted as the kernel's from now: a push going on leaves these pages to this read's answer
     * rather than copying them twice. */
    remote_file_note_served(file, offset, length);
    remote_file_learn_header(file);
    int repeated = repeated_failure(handle, offset, length);
    if (repeated) {
        char tensor[TRACE_TENSOR_MAX];
        if (context->trace)
            remote_file_describe_offset(file, offset, tensor, sizeof tensor);
        fuse_reply_err(req, repeated);
        if (context->trace)
            trace_line(file, offset, length, arrived_ns, 0, repeated, false, tensor);
        return;
    }
    read_plan plan;
    pthread_mutex_lock(&handle->lock);
    remote_file_plan_read(file, &handle->streams, offset, length, &plan);
    if (offset + length > handle->read_end)
        handle->read_end = offset + length;
    pump_hints(handle);
    bool hinted = handle->hinted;
    pthread_mutex_unlock(&handle->lock);

    read_request *rq = new_request(handle, req, offset, length);
    if (!rq) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    rq->uncounted = plan.uncounted;
    if (context->trace) {
        rq->arrived_ns = arrived_ns;
        rq->ahead_bytes = (hinted ? 0 : range_bytes(plan.ahead) + range_bytes(plan.rest));
    }
    schedule_range(handle->file, plan.demand.begin, plan.demand.end, FETCH_DEMAND, false, true);
    if (!hinted)
        schedule_plan(handle, &plan);

    uint64_t block_size = block_cache_block_size(context->blocks);
    atomic_store(&rq->pending, 1);
    bool waits = false;
    for (size_t i = 0; i < rq->part_count; i++) {
        request_part *part = &rq->parts[i];
        uint64_t block_start = block_index(part->blk) * block_size;
        int waiting = wait_for_part(handle, rq, part, block_start);
        if (waiting < 0)
            set_error(rq, -waiting);
        if (waiting > 0) {
            waits = true;   /* queued read-ahead holds its pages: the reader must not wait behind it */
            fetcher_promote(context->fetch_pool, file->source.id, block_start + part->from, part->to - part->from);
        }
    }
    if (!waits && !atomic_load(&rq->error))   /* answered by this thread, below: push first */
        push_following(handle, &plan, offset + length);
    if (waits)
        fuse_req_interrupt_func(req, on_interrupt, rq);
    drop_pending(rq, false);
}

/* ---- hints ---------------------------------------------------------------------------------- */

static int by_offset(const void *a, const void *b)
{
    const reader_hint *x = a, *y = b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

/* Sorts, clips to the file and merges ranges that touch or nearly do (what lies between two
 * hinted ranges less than a page apart costs less than a second request). */
static size_t normalize_hints(reader_hint *hints, size_t count, uint64_t file_size)
{
    qsort(hints, count, sizeof *hints, by_offset);
    size_t kept = 0;
    for (size_t i = 0; i < count; i++) {
        reader_hint h = hints[i];
        if (h.offset >= file_size || h.length == 0)
            continue;
        if (h.length > file_size - h.offset)
            h.length = file_size - h.offset;
        reader_hint *last = kept ? &hints[kept - 1] : NULL;
        if (last && h.offset <= last->offset + last->length + BLOCK_PAGE_SIZE) {
            uint64_t end = h.offset + h.length > last->offset + last->length ? h.offset + h.length
                                                                              : last->offset + last->length;
            last->length = end - last->offset;
        } else {
            hints[kept++] = h;
        }
    }
    return kept;
}

int reader_hint_ranges(open_file *handle, const reader_hint *hints, size_t count)
{
    if (count > MAX_PENDING_HINTS)
        return EINVAL;
    reader_hint *copy = malloc((count ? count : 1) * sizeof *copy);
    if (!copy)
        return ENOMEM;
    memcpy(copy, hints, count * sizeof *copy);
    count = normalize_hints(copy, count, handle->file->source.size);
    pthread_mutex_lock(&handle->lock);
    size_t pending = handle->hint_count - handle->hint_next;
    reader_hint *joined = pending + count <= MAX_PENDING_HINTS ? malloc((pending + count + 1) * sizeof *joined) : NULL;
    if (!joined) {
        pthread_mutex_unlock(&handle->lock);
        free(copy);
        return pending + count > MAX_PENDING_HINTS ? E2BIG : ENOMEM;
    }
    /* Appended to what is still pending, in one sorted list. */
    if (pending) /* hints is NULL before the first plan: no memcpy from NULL */
        memcpy(joined, handle->hints + handle->hint_next, pending * sizeof *joined);
    memcpy(joined + pending, copy, count * sizeof *joined);
    free(copy);
    free(handle->hints);
    handle->hints = joined;
    handle->hint_count = normalize_hints(joined, pending + count, handle->file->source.size);
    handle->hint_next = 0;
    if (!handle->hinted)
        atomic_fetch_add(&handle->context->hinted_handles, 1);
    handle->hinted = true;
    pump_hints(handle);
    pthread_mutex_unlock(&handle->lock);
    atomic_fetch_add(&handle->context->stats.hints, 1);
    return 0;
}
