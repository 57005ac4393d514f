/* readahead.h — adaptive sequential read-ahead of one open file (a pure policy: no I/O).
 *
 * Reads arrive from several kernel threads slightly out of order, so a read counts as
 * sequential unless it jumps back more than 1 MiB or forward more than 16 MiB from the end of
 * the stream; a jump starts a new stream. The window starts at the initial size and doubles up
 * to the maximum, but never exceeds a twelfth of what the stream has read so far: a reader that
 * stops (one tensor-parallel slice of a tensor, say) wastes at most ~8% of what it read.
 */
#ifndef HUBFS_READAHEAD_H
#define HUBFS_READAHEAD_H

#include <stdint.h>

#define READAHEAD_BACKWARD_RESET (1u << 20)
#define READAHEAD_FORWARD_RESET (16u << 20)
#define READAHEAD_WASTE_DIVISOR 12

typedef struct readahead_config {
    uint64_t block_size;
    uint64_t initial_window;     /* a multiple of block_size */
    uint64_t max_window;         /* 0 disables read-ahead */
} readahead_config;

typedef struct readahead_state {
    uint64_t stream_start;
    uint64_t stream_end;
    uint64_t window;
    uint64_t prefetched_until_block;   /* blocks below this were already asked for */
} readahead_state;

typedef struct readahead_plan {
    uint64_t first_block;        /* blocks [first_block, end_block) to prefetch now */
    uint64_t end_block;
} readahead_plan;

void readahead_init(readahead_state *state);

/* Records a read of [offset, offset + length) of a file of file_size bytes and returns the
 * blocks to prefetch now (an empty plan when none). */
readahead_plan readahead_on_read(readahead_state *state, const readahead_config *config,
                                 uint64_t offset, uint64_t length, uint64_t file_size);

#endif
