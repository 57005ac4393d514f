/* readahead.c — the sequential-stream detector and its growing window. */
#include "readahead.h"

#include <string.h>

void readahead_init(readahead_state *state)
{
    memset(state, 0, sizeof *state);
}

static int is_sequential(const readahead_state *state, uint64_t offset)
{
    if (offset + READAHEAD_BACKWARD_RESET < state->stream_end)
        return 0;
    return offset <= state->stream_end + READAHEAD_FORWARD_RESET;
}

/* Whether the stream reads the whole file: it began at byte 0 and has had no gap since. */
bool readahead_reads_whole_file(const readahead_state *state, const readahead_config *config)
{
    return config->whole_file_window && state->stream_start == 0 && state->contiguous_end == state->stream_end;
}

/* The window the stream has earned: doubling from the initial size while it stays within the
 * waste bound, capped at the maximum. */
static uint64_t earned_window(const readahead_state *state, const readahead_config *config)
{
    uint64_t read_so_far = state->stream_end - state->stream_start;
    if (readahead_reads_whole_file(state, config)) {
        uint64_t window = read_so_far > config->whole_file_window ? read_so_far : config->whole_file_window;
        return window < config->max_window ? window : config->max_window;
    }
    uint64_t allowed = read_so_far / READAHEAD_WASTE_DIVISOR;
    if (config->initial_window == 0 || allowed < config->initial_window)
        return 0;
    uint64_t window = state->window ? state->window : config->initial_window;
    while (window * 2 <= allowed && window * 2 <= config->max_window)
        window *= 2;
    return window < config->max_window ? window : config->max_window;
}

readahead_plan readahead_on_read(readahead_state *state, const readahead_config *config,
                                 uint64_t offset, uint64_t length, uint64_t file_size)
{
    readahead_plan plan = {0, 0};
    uint64_t end = offset + length;
    if (!is_sequential(state, offset)) {
        state->stream_start = offset;
        state->stream_end = end;
        state->window = 0;
        state->prefetched_until_block = 0;
        state->contiguous_end = end;
    } else if (end > state->stream_end) {
        state->stream_end = end;
    }
    if (offset <= state->contiguous_end + READAHEAD_CONTIGUOUS_SLACK && end > state->contiguous_end)
        state->contiguous_end = end;
    if (config->max_window == 0 || config->block_size == 0)
        return plan;
    state->window = earned_window(state, config);
    if (state->window == 0)
        return plan;
    uint64_t until = state->stream_end + state->window;
    if (until > file_size)
        until = file_size;
    if (until <= state->stream_end)
        return plan;
    uint64_t first = state->stream_end / config->block_size;
    uint64_t last = (until - 1) / config->block_size;
    if (first < state->prefetched_until_block)
        first = state->prefetched_until_block;
    if (first > last)
        return plan;
    plan.first_block = first;
    plan.end_block = last + 1;
    state->prefetched_until_block = last + 1;
    return plan;
}
