/* Read-ahead policy: stream detection, the waste bound, doubling and its cap. */
#include "check.h"
#include "readahead.h"

#define MIB (1024ULL * 1024ULL)

static const readahead_config config = {.block_size = 8 * MIB, .initial_window = 8 * MIB, .max_window = 128 * MIB};

/* Reads [from, to) in 128 KiB pieces, as the kernel does; returns the blocks asked for. */
static uint64_t read_sequentially(readahead_state *state, uint64_t from, uint64_t to, uint64_t file_size,
                                  uint64_t *highest_block_end)
{
    uint64_t blocks = 0;
    for (uint64_t offset = from; offset < to; offset += 128 * 1024) {
        readahead_plan plan = readahead_on_read(state, &config, offset, 128 * 1024, file_size);
        blocks += plan.end_block - plan.first_block;
        if (plan.end_block > *highest_block_end)
            *highest_block_end = plan.end_block;
    }
    return blocks;
}

static void short_reads_get_no_read_ahead(void)
{
    readahead_state state;
    readahead_init(&state);
    uint64_t highest = 0;
    CHECK_EQ_INT(read_sequentially(&state, 0, 64 * MIB, 4096 * MIB, &highest), 0);
}

static void waste_stays_within_a_twelfth(void)
{
    for (uint64_t length = 8 * MIB; length <= 2048 * MIB; length *= 2) {
        readahead_state state;
        readahead_init(&state);
        uint64_t highest = 0;
        read_sequentially(&state, 0, length, 8192 * MIB, &highest);
        uint64_t prefetched_end = highest * config.block_size;
        uint64_t covering_end = (length + config.block_size - 1) / config.block_size * config.block_size;
        uint64_t waste = prefetched_end > covering_end ? prefetched_end - covering_end : 0;
        CHECK(waste <= length / 12);
    }
}

static void window_grows_to_the_cap(void)
{
    readahead_state state;
    readahead_init(&state);
    uint64_t highest = 0;
    read_sequentially(&state, 0, 4096 * MIB, 8192 * MIB, &highest);
    CHECK_EQ_INT(state.window, 128 * MIB);
    CHECK(highest * config.block_size >= 4096 * MIB + 120 * MIB);
}

static void jumps_reset_the_stream(void)
{
    readahead_state state;
    readahead_init(&state);
    uint64_t highest = 0;
    read_sequentially(&state, 0, 512 * MIB, 8192 * MIB, &highest);
    CHECK(state.window > 0);
    readahead_plan plan = readahead_on_read(&state, &config, 100 * MIB, 4096, 8192 * MIB);   /* back > 1 MiB */
    CHECK_EQ_INT(plan.end_block - plan.first_block, 0);
    CHECK_EQ_INT(state.window, 0);
    CHECK_EQ_INT(state.stream_start, 100 * MIB);
    read_sequentially(&state, 100 * MIB, 300 * MIB, 8192 * MIB, &highest);
    CHECK(state.window > 0);
    plan = readahead_on_read(&state, &config, 400 * MIB, 4096, 8192 * MIB);   /* forward > 16 MiB */
    CHECK_EQ_INT(state.window, 0);
}

static void small_reorderings_stay_sequential(void)
{
    readahead_state state;
    readahead_init(&state);
    uint64_t highest = 0;
    read_sequentially(&state, 0, 200 * MIB, 8192 * MIB, &highest);
    uint64_t window = state.window;
    readahead_on_read(&state, &config, 200 * MIB - 512 * 1024, 128 * 1024, 8192 * MIB);   /* 512 KiB back */
    readahead_on_read(&state, &config, 200 * MIB + 4 * MIB, 128 * 1024, 8192 * MIB);      /* 4 MiB ahead */
    CHECK(state.window >= window);
    CHECK_EQ_INT(state.stream_start, 0);
}

static void never_past_the_end_of_the_file(void)
{
    readahead_state state;
    readahead_init(&state);
    uint64_t highest = 0;
    read_sequentially(&state, 0, 300 * MIB, 300 * MIB, &highest);
    CHECK(highest <= (300 * MIB + config.block_size - 1) / config.block_size);
}

static void zero_maximum_disables(void)
{
    readahead_config off = config;
    off.max_window = 0;
    readahead_state state;
    readahead_init(&state);
    for (uint64_t offset = 0; offset < 512 * MIB; offset += MIB) {
        readahead_plan plan = readahead_on_read(&state, &off, offset, MIB, 1024 * MIB);
        CHECK_EQ_INT(plan.end_block - plan.first_block, 0);
    }
}

static const readahead_config whole_file_config = {.block_size = 8 * MIB, .initial_window = 8 * MIB,
                                                   .max_window = 128 * MIB, .whole_file_window = 32 * MIB};

/* Reads [from, to) in 1 MiB pieces; returns the end of the highest block asked for (bytes). */
static uint64_t read_with(const readahead_config *cfg, readahead_state *state, uint64_t from, uint64_t to)
{
    uint64_t highest = 0;
    for (uint64_t offset = from; offset < to; offset += MIB) {
        readahead_plan plan = readahead_on_read(state, cfg, offset, MIB, 8192 * MIB);
        if (plan.end_block * cfg->block_size > highest)
            highest = plan.end_block * cfg->block_size;
    }
    return highest;
}

static void a_reader_from_the_start_gets_read_ahead_at_once(void)
{
    readahead_state state;
    readahead_init(&state);
    CHECK(read_with(&whole_file_config, &state, 0, 2 * MIB) >= 2 * MIB + 32 * MIB);
    readahead_init(&state);
    read_with(&whole_file_config, &state, 0, 1024 * MIB);
    CHECK_EQ_INT(state.window, 128 * MIB);
}

static void a_slice_gets_no_whole_file_read_ahead(void)
{
    /* One slice in the middle of the file: the waste bound still holds. */
    readahead_state state;
    readahead_init(&state);
    CHECK_EQ_INT(read_with(&whole_file_config, &state, 300 * MIB, 360 * MIB), 0);
    /* A reader from the start that skipped ahead (a gap) is no longer reading the whole file. */
    readahead_init(&state);
    read_with(&whole_file_config, &state, 0, MIB);
    CHECK_EQ_INT(read_with(&whole_file_config, &state, 10 * MIB, 60 * MIB), 0);
}

int main(void)
{
    a_reader_from_the_start_gets_read_ahead_at_once();
    a_slice_gets_no_whole_file_read_ahead();
    short_reads_get_no_read_ahead();
    waste_stays_within_a_twelfth();
    window_grows_to_the_cap();
    jumps_reset_the_stream();
    small_reorderings_stay_sequential();
    never_past_the_end_of_the_file();
    zero_maximum_disables();
    return check_finish("test_readahead");
}
