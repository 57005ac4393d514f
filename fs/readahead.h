/* readahead.h — adaptive sequential read-ahead of one open file (a pure policy: no I/O).
 *
 * Reads arrive from several kernel threads slightly out of order, so a read counts as
 * sequential unless it jumps back more than 1 MiB or forward more than 16 MiB from the end of
 * the stream; a jump starts a new stream. The window starts at the initial size and doubles up
 * to the maximum, but never exceeds a twelfth of what the stream has read so far: a reader that
 * stops (one tensor-parallel slice of a tensor, say) wastes at most ~8% of what it read.
 *
 * That bound leaves a young stream with no read-ahead at all (none for its first 96 MiB with
 * 8 MiB blocks), so each block is fetched only when the reader reaches it. A stream that began
 * at the start of the file and has read it contiguously since is a whole-file reader (cp, a
 * checksum, a loader reading every tensor in order), not a slice of a tensor, which starts at
 * the slice's offset: such a stream gets whole_file_window at once and then read-ahead as large
 * as what it has read (the classic doubling), up to the maximum.
 *
 * While a stream has earned no window and is not such a whole-file reader, the reader fetches
 * only the pieces of a block that a read touches (partial blocks, see blocks.h), so a slice
 * costs its own bytes plus at most a piece at each end rather than whole blocks.
 */
#ifndef HUBFS_READAHEAD_H
#define HUBFS_READAHEAD_H

#include <stdbool.h>
#include <stdint.h>

#define READAHEAD_BACKWARD_RESET (1u << 20)
#define READAHEAD_FORWARD_RESET (16u << 20)
#define READAHEAD_WASTE_DIVISOR 12
/* How far ahead of the contiguous end a read may land (kernel threads reorder reads) and still
 * count as contiguous for whole-file detection. */
#define READAHEAD_CONTIGUOUS_SLACK (2u << 20)

typedef struct readahead_config {
    uint64_t block_size;
    uint64_t initial_window;     /* a multiple of block_size */
    uint64_t max_window;         /* 0 disables read-ahead */
    uint64_t whole_file_window;  /* the first window of a whole-file reader; 0: no such rule */
} readahead_config;

typedef struct readahead_state {
    uint64_t stream_start;
    uint64_t stream_end;
    uint64_t window;
    uint64_t prefetched_until_block;   /* blocks below this were already asked for */
    uint64_t contiguous_end;     /* [stream_start, contiguous_end) was read with no gap */
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

/* Whether the stream reads the whole file (see above). */
bool readahead_reads_whole_file(const readahead_state *state, const readahead_config *config);

#endif
