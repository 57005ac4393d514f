/* planner.c — streams, read-ahead and the learned tensor order. */
#include "planner.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads that land this far behind a stream's end, or this far past what it asked for, still
 * continue it: the kernel's threads deliver reads of one stream slightly out of order. */
#define STREAM_BACK_SLACK (1u << 20)
#define STREAM_FORWARD_SLACK (1u << 20)
/* A slice reader (a stream inside a tensor) earns this fraction of what it read, once it has
 * read this much: the kernel itself reads up to 256 KiB past a slice (a sixth of a typical
 * 1.5 MB rank slice), so slices of the usual sizes get nothing more, and a long one wastes at
 * most a sixteenth. Loaders that know their slices say so with the WILLNEED hint instead. */
#define SLICE_AHEAD_DIVISOR 16
#define SLICE_AHEAD_AFTER (4u << 20)
/* What a stream that began at a tensor's first byte must have read before it earns the rest of
 * the tensor: more than the two 128 KiB windows the kernel reads around a single touch. */
#define TENSOR_EVIDENCE_BYTES (512u << 10)
#define KERNEL_REACH_PAST_HEADER (256u << 10)
/* A tensor-parallel rank reads the same share of every tensor it slices: rows [k/N, (k+1)/N).
 * Two slices in a row with one share teach it; a new stream that starts where that share of
 * its tensor starts is fetched to the share's end at once: one round trip per slice, where
 * reading through mmap costs one per 64 KiB fault (a rank's get_slice of every column-parallel
 * weight over a 20 ms link: 51 s, now 18 s, bytes unchanged). Shares smaller than
 * SHARE_MIN_BYTES teach nothing (the kernel's read-around blurs them); a stream starts up to
 * START_SLACK before its share and reads up to END_SLACK past it. */
#define SHARE_PARTS_MAX 64
#define SHARE_MIN_BYTES (512u << 10)
#define SHARE_START_SLACK (128u << 10)
#define SHARE_END_SLACK (512u << 10)
#define BLOCK_PAGE_BYTES 4096u
/* Whole tensors read with no recognisable order before the rest of the file is prefetched. */
#define BULK_AFTER_TENSORS 2
/* First-byte touches in a row, in one order, before the next tensors' heads are prefetched, and
 * how many heads then; a head is what the kernel reads around a touch at a tensor's start. */
#define TOUCHES_BEFORE_HEADS 3
#define HEADS_AHEAD 16
/* Heads ahead double for every HEADS_DOUBLE_AFTER touches the order holds, this many times (16
 * to 128): a loader touches a head in about a millisecond and a head takes a round trip or more
 * to come, so heads fewer than ~30 ahead leave its touches waiting over a 20 ms link (doubling
 * every 16 touches: from_pretrained waited a round trip every second layer, 25 times). A file
 * that takes its order from the repo's other files starts at the most: the order is proven. */
#define HEADS_DOUBLE_AFTER 8
#define HEADS_DOUBLINGS 3
#define TOUCHES_FOR_MOST_HEADS (TOUCHES_BEFORE_HEADS + HEADS_DOUBLE_AFTER * HEADS_DOUBLINGS)
/* A head: the kernel reads 128 KiB around a faulting page, from the page 64 KiB before it;
 * read(2) at a tensor's start reads on from there. Every byte a head holds past what the touch
 * reads stays in memory, unread, until the loader comes back for the tensor (seconds later, in
 * another shard): with 384 KiB heads a 3 GB model's 276 heads tied up a third of the budget
 * and the load's own prefetch was refused. */
#define HEAD_BEFORE ((64u << 10) + BLOCK_PAGE_BYTES)
#define HEAD_AFTER (128u << 10)
/* What the kernel may read whole around a touch of a neighbour. */
#define SMALL_TENSOR_BYTES (384u << 10)
#define MAX_NAME 512
/* Values of planner_order.prefetched: handed out by a prediction, or otherwise dealt with. */
#define PREFETCHED 1
#define PREDICTED 2
/* Tensors read whole in a row that a prediction had handed out before the window may grow past
 * max_prefetch, to twice it (max_ahead at most), while the memory budget has that much room:
 * safe_open + get_tensor over a 20 ms link at 40 MB/s per connection kept 5 requests in flight
 * in a window of a quarter of the budget, where cat's stream keeps 13. A reader whose order is
 * only partly predicted keeps the smaller window, and so does one sharing the budget with other
 * shards' prefetch (from_pretrained: twice the window without the room had 330 MB of prefetch
 * refused, read later on demand, and loaded 1.2-1.4x slower), and one going along file order:
 * its stream's read-ahead is ahead of it already, in larger parts (the larger window made a cold
 * dd of a shard send 20 % more requests). */
#define CONFIDENT_PREDICTIONS 8

void planner_streams_init(planner_streams *streams)
{
    memset(streams, 0, sizeof *streams);
}

int planner_order_init(planner_order *order, const tensor_map *map)
{
    memset(order, 0, sizeof *order);
    order->map = map;
    size_t n = map->count ? map->count : 1;
    order->prefetched = calloc(n, 1);
    order->rest_asked = calloc(n, 1);
    order->head_asked = calloc(n, 1);
    order->read_bytes = calloc(n, sizeof *order->read_bytes);
    order->read_prefix = calloc(n, sizeof *order->read_prefix);
    order->last_touched = map->count;
    if (!order->prefetched || !order->rest_asked || !order->head_asked || !order->read_bytes || !order->read_prefix) {
        planner_order_clear(order);
        return ENOMEM;
    }
    return 0;
}

void planner_order_clear(planner_order *order)
{
    free(order->prefetched);
    free(order->rest_asked);
    free(order->head_asked);
    free(order->read_bytes);
    free(order->read_prefix);
    memset(order, 0, sizeof *order);
}

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }
static uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* ---- streams ------------------------------------------------------------------------------ */

static uint64_t distance(uint64_t a, uint64_t b) { return a > b ? a - b : b - a; }

/* The stream a read continues: of those it may continue, the one whose end it is nearest, and
 * of two that end there (one caught up with the other), the one that has read more. */
static planner_stream *matching_stream(planner_streams *streams, uint64_t offset)
{
    planner_stream *best = NULL;
    for (int i = 0; i < PLANNER_STREAMS; i++) {
        planner_stream *s = &streams->streams[i];
        if (!s->last_used)
            continue;
        uint64_t reach = max_u64(s->end, s->asked_until) + STREAM_FORWARD_SLACK;
        bool continues = offset + STREAM_BACK_SLACK >= s->end && offset <= reach;
        if (!continues)
            continue;
        uint64_t d = distance(offset, s->end), best_d = best ? distance(offset, best->end) : UINT64_MAX;
        if (d < best_d || (d == best_d && s->read.bytes > best->read.bytes))
            best = s;
    }
    return best;
}

static planner_stream *oldest_stream(planner_streams *streams)
{
    planner_stream *oldest = &streams->streams[0];
    for (int i = 1; i < PLANNER_STREAMS; i++)
        if (streams->streams[i].last_used < oldest->last_used)
            oldest = &streams->streams[i];
    return oldest;
}

/* The tensor holding offset, else the first that starts after it. */
static size_t first_tensor_from(const tensor_map *map, uint64_t offset)
{
    size_t first = tensor_map_find(map, offset);
    if (first < map->count)
        return first;
    size_t low = 0, high = map->count;
    while (low < high) {
        size_t mid = low + (high - low) / 2;
        if (map->tensors[mid].begin < offset) low = mid + 1;
        else high = mid;
    }
    return low;
}

/* The tensor a new stream belongs to: the last one whose first byte the read covers, else the
 * one holding the read's first byte. */
static void place_stream(planner_stream *s, const tensor_map *map, uint64_t offset, uint64_t end)
{
    s->tensor = map ? map->count : 0;
    s->at_tensor_start = false;
    s->placed = map != NULL;
    if (!map)
        return;
    size_t index = first_tensor_from(map, offset);   /* in a gap or the header: the next one */
    if (index < map->count && map->tensors[index].begin < offset)
        index++;
    size_t covered = map->count;
    for (size_t i = index; i < map->count && map->tensors[i].begin < end; i++)
        covered = i;
    if (covered < map->count) {
        s->tensor = covered;
        s->at_tensor_start = true;
    } else {
        s->tensor = tensor_map_find(map, offset);
    }
}

static const planner_tally no_reads = {.first = UINT64_MAX};

static void tally_add(planner_tally *tally, uint64_t from, uint64_t to)
{
    tally->first = min_u64(tally->first, from);
    tally->bytes += to - from;
    tally->reads++;
}

/* What a stream has read densely up to its end, every byte from first on: all of it, else what
 * came after its last skip; NULL when that has holes too (touches of one page per tensor). */
static const planner_tally *dense_reads(const planner_stream *s)
{
    if (s->read.reads && s->read.bytes >= s->end - s->read.first)
        return &s->read;
    if (s->since_skip.reads && s->since_skip.bytes >= s->end - s->since_skip.first)
        return &s->since_skip;
    return NULL;
}

/* ---- the rank's share of each tensor ----------------------------------------------------- */

/* Where share index of parts begins in the tensor: floor(size * index / parts), overflow-free. */
static uint64_t share_offset(const tensor_extent *t, uint32_t parts, uint32_t index)
{
    uint64_t size = t->end - t->begin;
    return t->begin + size / parts * index + size % parts * index / parts;
}

/* The share [start, end) read: the coarsest split whose share starts within the slack of start
 * and ends in [end - END_SLACK, end]. False when none fits. */
static bool share_of_slice(const tensor_extent *t, uint64_t start, uint64_t end, uint32_t *parts, uint32_t *index)
{
    uint64_t size = t->end - t->begin;
    for (uint32_t n = 2; n <= SHARE_PARTS_MAX && size / n >= SHARE_MIN_BYTES; n++) {
        uint64_t into = min_u64(start - t->begin + SHARE_START_SLACK, size - 1);
        uint32_t k = (uint32_t)(into / (size / n + 1));
        for (uint32_t i = k > 0 ? k - 1 : 0; i <= k + 1 && i < n; i++) {
            uint64_t begin = share_offset(t, n, i), finish = share_offset(t, n, i + 1);
            if (distance(begin, start) <= SHARE_START_SLACK && end + BLOCK_PAGE_BYTES >= finish &&
                end <= finish + SHARE_END_SLACK) {
                *parts = n;
                *index = i;
                return true;
            }
        }
    }
    return false;
}

static planner_stream *newest_stream(planner_streams *streams)
{
    planner_stream *newest = &streams->streams[0];
    for (int i = 1; i < PLANNER_STREAMS; i++)
        if (streams->streams[i].last_used > newest->last_used)
            newest = &streams->streams[i];
    return newest->last_used ? newest : NULL;
}

/* Learns from the reader's last stream when it read a part of one tensor, not from its start. */
static void learn_share(planner_streams *reader, const tensor_map *map, planner_stream *s)
{
    if (!s || s->taught || !s->placed || s->tensor >= map->count || s->at_tensor_start || s->crossed)
        return;
    s->taught = true;
    const tensor_extent *t = &map->tensors[s->tensor];
    uint32_t parts = 0, index = 0;
    /* A part that is no share (a strided row piece, a tensor too small to tell) says nothing. */
    if (s->start <= t->begin || s->end > t->end || !share_of_slice(t, s->start, s->end, &parts, &index))
        return;
    bool same = parts == reader->share_parts && index == reader->share_index;
    reader->share_agreements = same ? reader->share_agreements + 1 : 0;
    reader->share_parts = parts;
    reader->share_index = index;
}

/* Where a new stream's slice ends, when it starts where the learnt share of its tensor does. */
static uint64_t predicted_share_end(const planner_streams *reader, const tensor_map *map, const planner_stream *s)
{
    if (reader->share_agreements < 1 || !s->placed || s->tensor >= map->count || s->at_tensor_start)
        return 0;
    const tensor_extent *t = &map->tensors[s->tensor];
    if ((t->end - t->begin) / reader->share_parts <= 2 * SHARE_START_SLACK)
        return 0;   /* neighbouring shares within the slack of one another: no telling them apart */
    uint64_t begin = share_offset(t, reader->share_parts, reader->share_index);
    return distance(begin, s->start) <= SHARE_START_SLACK
               ? share_offset(t, reader->share_parts, reader->share_index + 1) : 0;
}

static planner_stream *stream_for_read(planner_streams *streams, const planner_file *file, uint64_t offset,
                                       uint64_t end, bool *is_new)
{
    planner_stream *s = matching_stream(streams, offset);
    *is_new = s == NULL;
    if (!s) {
        if (file->order)
            learn_share(streams, file->order->map, newest_stream(streams));
        s = oldest_stream(streams);
        memset(s, 0, sizeof *s);
        s->start = offset;
        s->end = end;
        s->asked_until = end;
        s->read = s->since_skip = no_reads;
        place_stream(s, file->order ? file->order->map : NULL, offset, end);
        if (s->placed && s->tensor < file->order->map->count) {
            s->tensor_read_before = file->order->read_prefix[s->tensor];
            s->predicted_end = predicted_share_end(streams, file->order->map, s);
        }
    } else {
        if (offset > s->end)
            s->since_skip = no_reads;
        s->end = max_u64(s->end, end);
        /* Begun before the header was known (its reader read the header first): placed now. */
        if (!s->placed && file->order)
            place_stream(s, file->order->map, s->start, s->end);
    }
    s->last_used = ++streams->clock;
    if (end > file->header_end) {
        tally_add(&s->read, max_u64(offset, file->header_end), end);
        tally_add(&s->since_skip, max_u64(offset, file->header_end), end);
    }
    return s;
}

/* ---- read-ahead ------------------------------------------------------------------------- */

static uint64_t slice_ahead(uint64_t read_so_far)
{
    return read_so_far < SLICE_AHEAD_AFTER ? 0 : read_so_far / SLICE_AHEAD_DIVISOR;
}

/* Read-ahead a stream earns by reading on in order: three quarters of what it read while short
 * (a header or an index read through is done soon: what it fetched and never read stays under
 * what it read), all of it once long. */
#define SHORT_STREAM_BYTES (8u << 20)

static uint64_t generic_ahead(uint64_t read_so_far)
{
    return read_so_far < SHORT_STREAM_BYTES ? read_so_far / 4 * 3 : read_so_far;
}

/* Whether everything of the stream's tensor before where it began was read already (by an
 * earlier touch of its first page, or by another thread's stream from its start: torch reads a
 * tensor in parts on several threads): then it reads on from the tensor's start, not a slice. */
static bool continues_from_tensor_start(const planner_stream *s, const tensor_extent *t)
{
    uint64_t before = s->start > t->begin ? s->start - t->begin : 0;
    return s->tensor_read_before + BLOCK_PAGE_BYTES >= before;
}

/* How far a stream's read-ahead may reach now. */
static uint64_t ahead_target(planner_stream *s, const planner_file *file, const planner_config *config)
{
    if (s->predicted_end > s->end && !s->crossed && config->max_ahead)
        return min_u64(s->predicted_end, s->end + config->max_ahead);
    const planner_tally *read = dense_reads(s);
    if (!read || read->reads < 2 || config->max_ahead == 0)
        return s->end;
    /* A stream that began in a safetensors header runs on past it by the kernel's read-ahead
     * alone (two 64 KiB windows) when its reader wanted only the header: data read-ahead waits
     * for reads well beyond that reach. */
    uint64_t header = file->header_end ? file->header_end : config->header_probe;
    if (file->is_safetensors && s->start < header && s->end < header + KERNEL_REACH_PAST_HEADER)
        return s->end;
    uint64_t read_so_far = s->end - read->first;
    const tensor_map *map = file->order ? file->order->map : NULL;
    /* A safetensors file whose header is still on its way: this may be one rank's slice. */
    if (file->is_safetensors && !map && s->start >= file->header_end)
        return s->end + min_u64(slice_ahead(read_so_far), config->max_ahead);
    bool in_tensor = map && s->tensor < map->count && !s->crossed;
    if (in_tensor && s->end > map->tensors[s->tensor].end)
        s->crossed = true;
    if (!in_tensor || s->crossed)
        return s->end + min_u64(generic_ahead(read_so_far), config->max_ahead);
    const tensor_extent *t = &map->tensors[s->tensor];
    /* Reading on past the first windows the kernel asks at a tensor's start (a shape probe or
     * a meta-device load stops there) is the evidence that the whole tensor is wanted. */
    uint64_t read_in_tensor = s->end - max_u64(read->first, t->begin);
    bool whole_reader = s->at_tensor_start || continues_from_tensor_start(s, t);
    bool whole_wanted = whole_reader && read_in_tensor >= min_u64(TENSOR_EVIDENCE_BYTES, (t->end - t->begin) / 2);
    uint64_t earned = whole_wanted ? t->end - s->end : whole_reader ? 0 : slice_ahead(read_so_far);
    return min_u64(s->end + min_u64(earned, config->max_ahead), t->end);
}

/* ---- the learned order ---------------------------------------------------------------------- */

static uint32_t history_at(const planner_order *order, size_t position)
{
    return order->history[position % PLANNER_HISTORY];
}

/* The first run of digits in name: its value and where it is; false when there is none. */
static bool layer_number(const char *name, long *value, size_t *at, size_t *length)
{
    const char *digits = strpbrk(name, "0123456789");
    if (!digits)
        return false;
    size_t n = strspn(digits, "0123456789");
    if (n > 9)
        return false;
    *at = (size_t)(digits - name);
    *length = n;
    *value = strtol(digits, NULL, 10);
    return true;
}

/* name with its first number replaced by that number + delta: the same role in another layer. */
static bool shifted_name(const char *name, long delta, char *out, size_t out_size)
{
    long layer;
    size_t at, length;
    if (!layer_number(name, &layer, &at, &length) || layer + delta < 0)
        return false;
    int width = length > 1 && name[at] == '0' ? (int)length : 1;   /* zero-padded stays so: 07, 08 */
    int n = snprintf(out, out_size, "%.*s%0*ld%s", (int)at, name, width, layer + delta, name + at + length);
    return n > 0 && (size_t)n < out_size;
}

/* Whether two names differ only in their first number (and not in it). */
static bool same_role_other_layer(const char *a, const char *b)
{
    long la, lb;
    size_t at_a, len_a, at_b, len_b;
    return layer_number(a, &la, &at_a, &len_a) && layer_number(b, &lb, &at_b, &len_b) && la != lb &&
           at_a == at_b && strncmp(a, b, at_a) == 0 && strcmp(a + at_a + len_a, b + at_b + len_b) == 0;
}

/* The last visit's role visited in an earlier layer: where in the history, and both layer
 * numbers. */
static bool layer_period(const planner_order *order, size_t *match, long *layer_now, long *layer_then)
{
    const tensor_map *map = order->map;
    size_t n = order->history_count;
    size_t oldest = n > PLANNER_HISTORY ? n - PLANNER_HISTORY : 0;
    const char *current = map->tensors[history_at(order, n - 1)].name;
    for (size_t j = n - 1; j-- > oldest;) {
        const char *then = map->tensors[history_at(order, j)].name;
        if (same_role_other_layer(then, current)) {
            size_t at, length;
            layer_number(current, layer_now, &at, &length);   /* both have one: same_role_other_layer */
            layer_number(then, layer_then, &at, &length);
            *match = j;
            return true;
        }
    }
    return false;
}

static bool role_of(const char *name, planner_role *role, long *layer)
{
    size_t at, length;
    if (!layer_number(name, layer, &at, &length) || at > UINT16_MAX)
        return false;
    const char *after = name + at + length;
    size_t after_length = strlen(after);
    if (at + after_length >= PLANNER_ROLE_BYTES)
        return false;
    memcpy(role->rest, name, at);
    memcpy(role->rest + at, after, after_length + 1);
    role->number_at = (uint16_t)at;
    return true;
}

static bool same_role(const planner_role *a, const planner_role *b)
{
    return a->number_at == b->number_at && strcmp(a->rest, b->rest) == 0;
}

static bool name_in_layer(const planner_role *role, long layer, char *out, size_t size)
{
    int n = snprintf(out, size, "%.*s%ld%s", (int)role->number_at, role->rest, layer, role->rest + role->number_at);
    return n > 0 && (size_t)n < size;
}

/* Keeps the period of visits after match (the last visit's role in an earlier layer) as the
 * repo's pattern, rotated to start at its layer's first role; nothing when a visit of the period
 * lies in neither layer or has no layer number (a period that is not one layer's visits). */
static void learn_pattern(const planner_order *order, size_t match, long layer_now, long layer_then,
                          planner_pattern *pattern)
{
    size_t period = order->history_count - 1 - match;
    if (period == 0 || period > PLANNER_PATTERN_ROLES || layer_now == layer_then)
        return;
    planner_role roles[PLANNER_PATTERN_ROLES];
    size_t first_of_layer = period;
    for (size_t i = 0; i < period; i++) {
        long layer;
        if (!role_of(order->map->tensors[history_at(order, match + 1 + i)].name, &roles[i], &layer) ||
            (layer != layer_now && layer != layer_then))
            return;
        if (layer == layer_now && first_of_layer == period)
            first_of_layer = i;
    }
    pattern->role_count = period;
    pattern->layer_step = layer_now - layer_then;
    for (size_t i = 0; i < period; i++)
        pattern->roles[i] = roles[(first_of_layer + i) % period];
}

/* The predicted visits after the last one, by analogy with the previous layer: the visits that
 * followed the same role there, moved by the layer distance. Once such predictions keep coming
 * true, the period is the repo's pattern. Returns how many were written. */
#define PATTERN_EVIDENCE 2
static size_t predict_by_layer(const planner_order *order, planner_pattern *pattern, size_t *out, size_t max)
{
    const tensor_map *map = order->map;
    size_t n = order->history_count, match = 0;
    long layer_now = 0, layer_then = 0;
    if (!layer_period(order, &match, &layer_now, &layer_then))
        return 0;
    if (pattern && order->predicted_in_a_row >= PATTERN_EVIDENCE)
        learn_pattern(order, match, layer_now, layer_then, pattern);
    size_t period = n - 1 - match, count = 0;
    char name[MAX_NAME];
    for (size_t m = 0; count < max && m < 4 * period; m++) {
        const char *model = map->tensors[history_at(order, match + 1 + m % period)].name;
        long delta = (layer_now - layer_then) * (long)(1 + m / period);
        if (!shifted_name(model, delta, name, sizeof name))
            continue;
        size_t index = tensor_map_find_name(map, name);
        if (index < map->count)
            out[count++] = index;
    }
    return count;
}

/* The predicted visits after the last one by the repo's pattern: a file whose reader came from
 * another shard knows its visiting order from its first visit. */
static size_t predict_by_pattern(const planner_order *order, const planner_pattern *pattern, size_t *out,
                                 size_t max)
{
    if (!pattern || !pattern->role_count)
        return 0;
    const tensor_map *map = order->map;
    planner_role role;
    long layer;
    if (!role_of(map->tensors[history_at(order, order->history_count - 1)].name, &role, &layer))
        return 0;
    size_t p = pattern->role_count, at = p, count = 0;
    for (size_t i = 0; i < p && at == p; i++)
        if (same_role(&pattern->roles[i], &role))
            at = i;
    if (at == p)
        return 0;
    char name[MAX_NAME];
    for (size_t m = 1; count < max && m <= 4 * p; m++) {
        long in_layer = layer + pattern->layer_step * (long)((at + m) / p);
        if (in_layer < 0 || !name_in_layer(&pattern->roles[(at + m) % p], in_layer, name, sizeof name))
            continue;
        size_t index = tensor_map_find_name(map, name);
        if (index < map->count)
            out[count++] = index;
    }
    return count;
}

/* The tensor at position i of file order (by_name: of name order). */
static size_t tensor_at(const tensor_map *map, size_t i, bool by_name) { return by_name ? map->by_name[i] : i; }
static size_t position_of(const tensor_map *map, size_t tensor, bool by_name)
{
    return by_name ? map->tensors[tensor].name_rank : tensor;
}

static bool too_small_to_visit(const planner_order *order, size_t tensor)
{
    const tensor_extent *t = &order->map->tensors[tensor];
    return t->end - t->begin <= TENSOR_EVIDENCE_BYTES;
}

/* Whether `to` comes after `from` along file (name) order with only tensors between that pass
 * the test: a reader going from one to the other in that order may have read them without the
 * planner counting them. Further apart than FOLLOWS_MAX_BETWEEN is no step: every read would
 * otherwise walk a model's thousands of small tensors. */
#define FOLLOWS_MAX_BETWEEN 256
static bool follows(const planner_order *order, size_t from, size_t to, bool by_name,
                    bool (*passed)(const planner_order *, size_t))
{
    const tensor_map *map = order->map;
    if (from >= map->count)
        return false;
    size_t a = position_of(map, from, by_name), b = position_of(map, to, by_name);
    if (b <= a || b - a > FOLLOWS_MAX_BETWEEN)
        return false;
    for (size_t i = a + 1; i < b; i++)
        if (!passed(order, tensor_at(map, i, by_name)))
            return false;
    return true;
}

/* Whether a visit to `to` after `from` went on along file (name) order: layer norms and biases,
 * too small to count as visits, may lie between. */
static bool step_in_order(const planner_order *order, uint32_t from, uint32_t to, bool by_name)
{
    return follows(order, from, to, by_name, too_small_to_visit);
}

/* Whether the last two visits each went on along file order (by_name: name order). Needs three
 * visits: one step in order happens by chance in any order. */
static bool two_steps_in_order(const planner_order *order, bool by_name)
{
    size_t n = order->history_count;
    if (n < 3)
        return false;
    uint32_t a = history_at(order, n - 3), b = history_at(order, n - 2), c = history_at(order, n - 1);
    return step_in_order(order, a, b, by_name) && step_in_order(order, b, c, by_name);
}

/* Tensors predicted to be read next, most likely first: by analogy with the previous layer,
 * else by the repo's pattern, else along file or name order when the last visits followed it,
 * else (after a few whole tensors) the rest of the file in file order. */
static size_t predict_next(const planner_order *order, planner_pattern *pattern, size_t *out, size_t max)
{
    const tensor_map *map = order->map;
    size_t n = order->history_count;
    if (n < 1)
        return 0;
    uint32_t last = history_at(order, n - 1);
    size_t count = n >= 2 ? predict_by_layer(order, pattern, out, max) : 0;
    if (!count)
        count = predict_by_pattern(order, pattern, out, max);
    if (count || n < 2)
        return count;
    if (two_steps_in_order(order, false)) {
        for (size_t i = last + 1; i < map->count && count < max; i++)
            out[count++] = i;
        return count;
    }
    if (two_steps_in_order(order, true)) {
        for (size_t r = map->tensors[last].name_rank + 1; r < map->count && count < max; r++)
            out[count++] = map->by_name[r];
        return count;
    }
    if (n < BULK_AFTER_TENSORS)
        return 0;
    for (size_t i = 0; i < map->count && count < max; i++)
        if (!order->prefetched[i])
            out[count++] = i;
    return count;
}

/* The largest prefetch window the order has earned. */
static uint64_t window_cap(const planner_order *order, const planner_config *config, uint64_t memory_room)
{
    if (!config->max_prefetch)
        return config->max_ahead;
    bool confident = order->predicted_in_a_row >= CONFIDENT_PREDICTIONS && memory_room >= config->max_prefetch &&
                     !two_steps_in_order(order, false);
    return min_u64(config->max_ahead, confident ? 2 * config->max_prefetch : config->max_prefetch);
}

static void record_whole_tensor(planner_order *order, size_t tensor, const planner_config *config,
                                uint64_t memory_room)
{
    size_t n = order->history_count;
    if (n && history_at(order, n - 1) == tensor)
        return;
    order->history[n % PLANNER_HISTORY] = (uint32_t)tensor;
    order->history_count++;
    order->predicted_in_a_row = order->prefetched[tensor] == PREDICTED ? order->predicted_in_a_row + 1 : 0;
    order->prefetched[tensor] = PREFETCHED;
    const tensor_extent *t = &order->map->tensors[tensor];
    order->whole_bytes += t->end - t->begin;
    order->window = min_u64(config->first_prefetch + 2 * order->whole_bytes, window_cap(order, config, memory_room));
}

/* Bytes handed out for prefetch that no reader has read yet. */
static uint64_t unread_prefetch(const planner_order *order)
{
    uint64_t bytes = 0;
    for (size_t i = 0; i < order->map->count; i++) {
        const tensor_extent *t = &order->map->tensors[i];
        if (order->prefetched[i] && order->read_bytes[i] < t->end - t->begin)
            bytes += t->end - t->begin - order->read_bytes[i];
    }
    return bytes;
}

static void plan_prefetch(planner_order *order, planner_pattern *pattern, const planner_config *config,
                          read_plan *plan)
{
    size_t predicted[PLAN_MAX_PREFETCH * 4];
    size_t count = predict_next(order, pattern, predicted, sizeof predicted / sizeof predicted[0]);
    /* The window bounds what is prefetched and unread, whatever predicted it: each whole
     * tensor read must not hand out a window more. */
    uint64_t covered = unread_prefetch(order);
    for (size_t i = 0; i < count && covered < order->window && plan->prefetch_count < PLAN_MAX_PREFETCH; i++) {
        const tensor_extent *t = &order->map->tensors[predicted[i]];
        if (order->prefetched[predicted[i]])
            continue;
        covered += t->end - t->begin;
        order->prefetched[predicted[i]] = PREDICTED;
        plan->prefetch[plan->prefetch_count++] = (plan_range){t->begin, min_u64(t->end, t->begin + config->max_ahead)};
    }
}

/* Small enough for the kernel to read it whole around a touch of a neighbour. */
static bool is_small(const tensor_extent *t) { return t->end - t->begin <= SMALL_TENSOR_BYTES; }

/* Whether a toucher may have passed this tensor on its way: small enough for the kernel to read
 * it around a neighbour's touch, or its head read already (the kernel's read around a touch
 * reaches the next tensor's head). */
static bool passed_by_toucher(const planner_order *order, size_t tensor)
{
    return is_small(&order->map->tensors[tensor]) || order->read_prefix[tensor] > 0;
}

/* How many heads to have asked for ahead of a touch, after touches in a row in one order. */
static size_t heads_ahead(unsigned touches)
{
    unsigned doublings = (touches - TOUCHES_BEFORE_HEADS) / HEADS_DOUBLE_AFTER;
    return (size_t)HEADS_AHEAD << (doublings < HEADS_DOUBLINGS ? doublings : HEADS_DOUBLINGS);
}

/* A touch of tensor (touches_tensor_start). Several in a row along file or name order, or one in
 * a file with no order of its own while the repo's other files are touched in one, and the next
 * tensors' heads are fetched ahead; touching a head fetched so keeps the order going. */
static void plan_heads(planner_order *order, size_t tensor, const planner_file *file, read_plan *plan)
{
    const tensor_map *map = order->map;
    size_t last = order->last_touched;
    if (order->head_asked[tensor]) {
        if (order->file_order_touches >= TOUCHES_BEFORE_HEADS)
            order->file_order_touches++;
        else
            order->name_order_touches++;
    } else {
        bool file_next = follows(order, last, tensor, false, passed_by_toucher);
        bool name_next = follows(order, last, tensor, true, passed_by_toucher);
        order->file_order_touches = file_next ? order->file_order_touches + 1 : 0;
        order->name_order_touches = name_next ? order->name_order_touches + 1 : 0;
        /* No order of its own (its first touches, or one out of order: transformers touches
         * lm_head before the layers): the order the repo's other files are touched in. */
        bool own_order = order->file_order_touches >= TOUCHES_BEFORE_HEADS ||
                         order->name_order_touches >= TOUCHES_BEFORE_HEADS;
        if (!own_order && file->repo_touching == TOUCHING_FILE_ORDER)
            order->file_order_touches = TOUCHES_FOR_MOST_HEADS;
        if (!own_order && file->repo_touching == TOUCHING_NAME_ORDER)
            order->name_order_touches = TOUCHES_FOR_MOST_HEADS;
    }
    order->last_touched = tensor;
    plan->touched = true;
    bool by_file = order->file_order_touches >= TOUCHES_BEFORE_HEADS;
    if (!by_file && order->name_order_touches < TOUCHES_BEFORE_HEADS)
        return;
    plan->touching = by_file ? TOUCHING_FILE_ORDER : TOUCHING_NAME_ORDER;
    size_t at = position_of(map, tensor, !by_file);
    size_t ahead = heads_ahead(by_file ? order->file_order_touches : order->name_order_touches);
    for (size_t k = 1; k <= ahead && at + k < map->count && plan->prefetch_count < PLAN_MAX_PREFETCH; k++) {
        size_t next = tensor_at(map, at + k, !by_file);
        if (order->head_asked[next])
            continue;
        order->head_asked[next] = 1;
        const tensor_extent *t = &map->tensors[next];
        uint64_t begin = t->begin > HEAD_BEFORE ? t->begin - HEAD_BEFORE : 0;
        plan->prefetch[plan->prefetch_count++] = (plan_range){begin, min_u64(t->begin + HEAD_AFTER, file->size)};
    }
}

void planner_order_note_read(planner_order *order, uint64_t offset, uint64_t end)
{
    const tensor_map *map = order->map;
    for (size_t i = first_tensor_from(map, offset); i < map->count && map->tensors[i].begin < end; i++) {
        const tensor_extent *t = &map->tensors[i];
        order->read_bytes[i] = min_u64(t->end - t->begin, order->read_bytes[i] + min_u64(end, t->end) - max_u64(offset, t->begin));
        if (offset <= t->begin + order->read_prefix[i])
            order->read_prefix[i] = max_u64(order->read_prefix[i], min_u64(end, t->end) - t->begin);
    }
}

/* Whether a read of [offset, end) touches tensor t: the first read of a large tensor's first
 * byte, whatever stream it joined and whatever was read of its tail (the kernel reads around a
 * touch of the next tensor). Not a read that began in the header (it reaches the first tensor),
 * nor a tensor start past the read's middle page: the kernel reads around a faulting page, half
 * a window on each side, so what lies past it was read ahead (after a small tensor is touched,
 * the read reaches the next tensor's head). The window may start a page early (HEAD_BEFORE):
 * from_pretrained's first touch in a shard went uncounted so, and its order was learnt a round
 * trip later. A read(2) touches at its start. */
static bool touches_tensor_start(const planner_order *order, const planner_file *file, size_t tensor,
                                 uint64_t offset, uint64_t end)
{
    const tensor_extent *t = &order->map->tensors[tensor];
    uint64_t middle_page_end = offset + (end - offset) / 2 + 2 * BLOCK_PAGE_BYTES;
    return order->read_prefix[tensor] == 0 && !is_small(t) && offset >= file->header_end && t->begin >= offset &&
           t->begin < middle_page_end;
}

/* Counts the read against the tensors it overlaps; a tensor read past half earns its rest, one
 * read whole is a visit for the order learner, which may then prefetch the next ones. */
static void plan_tensors(const planner_file *file, const planner_config *config, uint64_t offset, uint64_t end,
                         read_plan *plan)
{
    planner_order *order = file->order;
    const tensor_map *map = order->map;
    size_t first = first_tensor_from(map, offset);
    for (size_t i = first; i < map->count && map->tensors[i].begin < end; i++) {
        const tensor_extent *t = &map->tensors[i];
        uint64_t size = t->end - t->begin, before = order->read_bytes[i];
        if (touches_tensor_start(order, file, i, offset, end))
            plan_heads(order, i, file, plan);
        planner_order_note_read(order, max_u64(offset, t->begin), min_u64(end, t->end));
        if (!order->rest_asked[i] && order->read_bytes[i] * 2 > size && size > TENSOR_EVIDENCE_BYTES) {
            order->rest_asked[i] = 1;
            plan->rest = (plan_range){t->begin, t->end};
        }
        /* Only tensors too large for the kernel's reads around one touch count as visits. */
        if (before < size && order->read_bytes[i] == size && size > TENSOR_EVIDENCE_BYTES) {
            record_whole_tensor(order, i, config, file->memory_room);
            plan_prefetch(order, file->repo_pattern, config, plan);
        }
    }
}

/* ---- the plan ------------------------------------------------------------------------------ */

void planner_plan_read(planner_streams *streams, const planner_file *file, const planner_config *config,
                       uint64_t offset, uint64_t length, read_plan *plan)
{
    memset(plan, 0, sizeof *plan);
    uint64_t end = offset + length > file->size ? file->size : offset + length;
    plan->demand = (plan_range){offset, end};
    if (offset >= end)
        return;
    bool is_new;
    planner_stream *s = stream_for_read(streams, file, offset, end, &is_new);
    plan->in_order_bytes = s->since_skip.bytes;
    if (file->is_safetensors && file->header_end == 0 && offset < config->header_probe)
        plan->demand.end = max_u64(end, min_u64(config->header_probe, file->size));
    if (file->is_safetensors && offset < file->header_end)
        plan->demand.end = max_u64(end, file->header_end);
    plan->uncounted = true;
    if (file->is_safetensors && end <= (file->header_end ? file->header_end : config->header_probe))
        return;   /* header reads never start data read-ahead */
    uint64_t target = min_u64(ahead_target(s, file, config), file->size);
    uint64_t from = max_u64(s->asked_until, plan->demand.end);
    /* Topped up only once half of what was asked ahead is used: fewer, larger requests. */
    uint64_t window = target > s->end ? target - s->end : 0;
    bool enough_ahead = s->asked_until > s->end && s->asked_until - s->end >= window / 2;
    if (target > from && !enough_ahead)
        plan->ahead = (plan_range){from, target};
    s->asked_until = max_u64(s->asked_until, max_u64(plan->ahead.end, plan->demand.end));
    if (file->order && config->max_ahead) {
        plan_tensors(file, config, offset, end, plan);
        plan->uncounted = false;
    }
}

typedef struct pattern_place {
    long layer_rank;             /* the layer's number, negated when the pattern steps down */
    size_t role, tensor;
} pattern_place;

static int by_pattern_place(const void *a, const void *b)
{
    const pattern_place *x = a, *y = b;
    if (x->layer_rank != y->layer_rank)
        return x->layer_rank < y->layer_rank ? -1 : 1;
    return x->role < y->role ? -1 : x->role > y->role;
}

/* The map's tensors that play a role of the pattern, in the pattern's visiting order: its lowest
 * layer first (highest when it steps down). Returns how many; 0 also when out of memory. */
static size_t pattern_places(const tensor_map *map, const planner_pattern *pattern, pattern_place **out)
{
    pattern_place *places = malloc((map->count ? map->count : 1) * sizeof *places);
    size_t count = 0;
    for (size_t i = 0; places && i < map->count; i++) {
        planner_role role;
        long layer;
        if (!role_of(map->tensors[i].name, &role, &layer))
            continue;
        for (size_t r = 0; r < pattern->role_count; r++)
            if (same_role(&pattern->roles[r], &role)) {
                places[count++] = (pattern_place){pattern->layer_step > 0 ? layer : -layer, r, i};
                break;
            }
    }
    if (count)
        qsort(places, count, sizeof *places, by_pattern_place);
    *out = places;
    return count;
}

static bool hand_out(planner_order *order, size_t tensor, uint64_t *handed, plan_range *ranges, size_t *count)
{
    if (order->prefetched[tensor])
        return false;
    order->prefetched[tensor] = PREFETCHED;
    const tensor_extent *t = &order->map->tensors[tensor];
    ranges[(*count)++] = (plan_range){t->begin, t->end};
    *handed += t->end - t->begin;
    return true;
}

size_t planner_order_bulk(planner_order *order, const planner_pattern *pattern, uint64_t bytes, plan_range *ranges,
                          size_t max)
{
    const tensor_map *map = order->map;
    size_t count = 0;
    uint64_t handed = 0;
    if (pattern && pattern->role_count) {
        pattern_place *places;
        size_t n = pattern_places(map, pattern, &places);
        for (size_t i = 0; i < n && count < max && handed < bytes; i++)
            hand_out(order, places[i].tensor, &handed, ranges, &count);
        free(places);
        return count;
    }
    for (size_t i = 0; i < map->count && count < max && handed < bytes; i++)
        hand_out(order, i, &handed, ranges, &count);
    return count;
}

bool planner_order_follows_file(const planner_order *order)
{
    return two_steps_in_order(order, false);
}

void planner_order_prefetch_refused(planner_order *order, plan_range range)
{
    size_t i = tensor_map_find(order->map, range.begin);
    if (i >= order->map->count)
        return;
    const tensor_extent *t = &order->map->tensors[i];
    if (t->begin == range.begin && order->read_bytes[i] < t->end - t->begin)
        order->prefetched[i] = 0;
}
