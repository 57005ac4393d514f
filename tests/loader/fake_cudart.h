/* fake_cudart.h — what tests can ask tests/loader/fake_cudart.c, the strict CPU stand-in for
 * the CUDA runtime (its rules and environment knobs are described at the top of that file). */
#ifndef HUBFS_TESTS_FAKE_CUDART_H
#define HUBFS_TESTS_FAKE_CUDART_H

#include <stdint.h>

typedef struct fake_cuda_stats {
    unsigned context_mask;      /* bit d: a primary context was created on (visible) device d */
    unsigned violations;        /* calls that broke a rule of the runtime (or of the fake's (*)) */
    uint64_t copies;            /* host-to-device copies queued */
    uint64_t copies_2d, rows_2d; /* of which 2-D copies of more than one row, and their rows */
    uint64_t landed_bytes;      /* bytes of host-to-device copies completed */
    uint64_t engine_ns;         /* copy-engine time of those copies (the fake's cost model) */
    uint64_t row_overhead_ns;   /* the part of engine_ns spent on rows of 2-D copies */
    uint64_t spin_ns, blocked_ns; /* time threads spent waiting for the device: spinning, asleep */
    uint64_t pinned_peak;       /* most pinned host bytes allocated at once */
} fake_cuda_stats;

/* Reads the environment again and forgets contexts, violations, injected errors and
 * statistics, and the calling thread's device and context. Call with no stream, event or
 * allocation alive; other threads keep their current device (use fresh threads). */
void fake_cuda_reset(void);
void fake_cuda_get_stats(fake_cuda_stats *out);
/* The i-th violation recorded (the first 16 are kept), or NULL. */
const char *fake_cuda_violation(unsigned i);
/* The runtime call that created the primary context of `device`, or NULL when none did. */
const char *fake_cuda_context_creator(int device);

#endif
