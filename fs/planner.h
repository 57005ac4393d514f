/* planner.h — what to fetch for a read (a pure policy: no I/O, no locks; the caller serialises).
 *
 * The rule is to fetch what is read, and more only on evidence:
 * - A read that starts a stream fetches exactly its bytes (the kernel rounds them to pages).
 * - A stream earns read-ahead by reading on in order: as much again as it has read so far
 *   (so what it fetched and never read is at most what it read), up to max_ahead. Reads that
 *   skip bytes (one page of each tensor, as meta-device loads touch them) earn nothing.
 * - safetensors files: a read inside the header fetches the rest of the header and nothing
 *   beyond; the first read of an unknown header fetches header_probe bytes (most headers fit).
 *   A stream that starts at a tensor's first byte and reads on earns the whole tensor at once.
 *   A stream that starts inside a tensor (one rank's slice) earns a sixteenth of what it read
 *   once it has read a few MiB (less is the kernel's own read-ahead's to cover),
 *   never past the tensor's end, until its reads cross into the next tensor.
 * - Tensors read whole, one after another, teach the file's visiting order: file order, name
 *   order (norms and biases, too small to count, may lie between), or the order the previous layer was read in (by layer-number analogy); the next
 *   tensors along it are prefetched, a window that doubles while predictions keep coming true.
 *   With no order found after a few whole tensors, the file's remaining tensors are prefetched
 *   in file order. The window is at most twice what was read whole (plus first_prefetch), so
 *   a reader that stops leaves at most that much unread.
 * - Readers touching the first bytes of tensor after tensor (loading a model's structure, on the
 *   meta device or before reading it) in file or name order get the next tensors' first bytes
 *   (the window the kernel reads around one touch) fetched ahead, all at once, more the longer the
 *   order holds. Tensors between two touches that are small, or whose first bytes came with an
 *   earlier touch's window, do not break the order; nor does a touch of a head fetched ahead. A
 *   file with no touch order of its own (its first touches, or one out of order) takes the order
 *   its repo's other files are being touched in.
 */
#ifndef HUBFS_PLANNER_H
#define HUBFS_PLANNER_H

#include "tensor_map.h"

#include <stdbool.h>
#include <stdint.h>

#define PLANNER_STREAMS 8
#define PLAN_MAX_PREFETCH 32
#define PLANNER_HISTORY 256

typedef struct planner_config {
    uint64_t max_ahead;          /* largest read-ahead and prefetch window; 0 disables both */
    uint64_t header_probe;       /* first fetch at the start of a safetensors file */
    uint64_t first_prefetch;     /* the prefetch window once an order is found */
    uint64_t max_prefetch;       /* largest prefetch window along an order (a share of the
                                  * memory budget: several files prefetch at once) */
} planner_config;

typedef struct plan_range {
    uint64_t begin, end;
} plan_range;

/* The order in which a reader touches tensors' first bytes, when it keeps to one. */
typedef enum planner_touching {
    TOUCHING_NONE,
    TOUCHING_FILE_ORDER,
    TOUCHING_NAME_ORDER
} planner_touching;

typedef struct read_plan {
    plan_range demand;           /* holds the read: fetched at once, the reader waits */
    plan_range ahead;            /* read-ahead of the stream (may be empty) */
    plan_range rest;             /* the rest of a tensor readers are reading most of */
    bool uncounted;              /* the read was not counted against tensors (no order yet, or
                                  * a header read): count it once served, when an order exists */
    plan_range prefetch[PLAN_MAX_PREFETCH];   /* whole tensors along the learned order, and the
                                                 first bytes of tensors a prober will touch */
    size_t prefetch_count;
    uint64_t in_order_bytes;     /* data its stream read in order up to it, itself included */
    bool touched;                /* the read touched a tensor's first bytes ... */
    planner_touching touching;   /* ... and the file's touches keep to this order (heads come ahead) */
} read_plan;

/* Data bytes read by a stream: from first on, in reads (overlaps counted twice). Fewer bytes
 * than the span to its end means holes: reads that skip bytes earn no read-ahead. */
typedef struct planner_tally {
    uint64_t first;              /* UINT64_MAX before any */
    uint64_t bytes;
    uint32_t reads;
} planner_tally;

typedef struct planner_stream {
    uint64_t start, end;         /* [start, end) read, near enough in order */
    uint64_t asked_until;        /* read-ahead was asked up to here */
    planner_tally read;          /* its data reads (past the header) */
    planner_tally since_skip;    /* those since it last skipped forward over unread bytes */
    size_t tensor;               /* the tensor it started at or in; map count when none */
    bool at_tensor_start;        /* its first read covered that tensor's first byte */
    bool placed;                 /* tensor and at_tensor_start were set with the tensor map */
    uint64_t tensor_read_before; /* its tensor's read prefix (read_prefix) when it began */
    bool crossed;                /* it read past that tensor's end: a file-order reader */
    bool taught;                 /* the slice learner has seen it */
    uint64_t predicted_end;      /* where its slice ends, by the rank's learnt share; 0: unknown */
    bool consumed_reported;
    uint64_t last_used;
} planner_stream;

/* Per open file: the reader's recent streams (several threads may read one file at once), and
 * the share of each tensor it slices (a rank's: [index/parts, (index + 1)/parts)), once known. */
typedef struct planner_streams {
    planner_stream streams[PLANNER_STREAMS];
    uint64_t clock;
    uint32_t share_parts, share_index;
    unsigned share_agreements;   /* slices in a row after the first that had that share */
} planner_streams;

/* Per remote file, once its tensor map is known: the visiting order learnt from all readers. */
typedef struct planner_order {
    const tensor_map *map;
    uint32_t history[PLANNER_HISTORY];   /* tensors read whole, oldest first (a ring) */
    size_t history_count;                /* total ever recorded */
    uint8_t *prefetched;                 /* per tensor: already handed out for prefetch, or read */
    uint64_t *read_bytes;                /* per tensor: bytes readers asked of it */
    uint64_t *read_prefix;               /* per tensor: [begin, begin + this) was all read */
    uint8_t *rest_asked;                 /* per tensor: its remainder was asked for */
    uint64_t whole_bytes;                /* bytes of the tensors read whole so far */
    uint8_t *head_asked;                 /* per tensor: its first bytes were prefetched */
    size_t last_touched;                 /* the last tensor whose first byte a new stream read */
    unsigned file_order_touches;         /* consecutive first-byte touches in file order */
    unsigned name_order_touches;         /* ... and in name order */
    uint64_t window;
    unsigned predicted_in_a_row;         /* whole tensors read in a row that were predicted */
} planner_order;

/* How a reader visits a model's layers, learnt in one file of a repo and used in the others
 * (transformers reads module order, q_proj before k_proj, while a checkpoint written by the
 * safetensors package stores each shard in name order, layers.10 before layers.7): one layer's
 * roles (a tensor's name less its layer number) in visiting order, and the step in layer number
 * from one layer to the next. */
#define PLANNER_PATTERN_ROLES 64
#define PLANNER_ROLE_BYTES 160
typedef struct planner_role {
    uint16_t number_at;          /* where the layer number stood in the name */
    char rest[PLANNER_ROLE_BYTES];   /* the name without it */
} planner_role;

typedef struct planner_pattern {
    size_t role_count;           /* 0: nothing learnt */
    long layer_step;
    planner_role roles[PLANNER_PATTERN_ROLES];
} planner_pattern;

/* What the fs knows of the file being read. */
typedef struct planner_file {
    uint64_t size;
    bool is_safetensors;
    uint64_t header_end;         /* 8 + N once known, else 0 */
    planner_order *order;        /* NULL until the tensor map is known */
    uint64_t memory_room;        /* memory the fs could still claim for read-ahead and prefetch */
    planner_touching repo_touching;   /* how the repo's other files are being touched: a loader
                                       * touching one shard's tensors goes on to the next shard */
    planner_pattern *repo_pattern;    /* how the repo's readers visit layers: used by a file whose
                                       * reader shows no order of its own yet, updated by one that
                                       * does; NULL: none kept */
} planner_file;

void planner_streams_init(planner_streams *streams);

/* 0 or ENOMEM. The map must outlive the order. */
int planner_order_init(planner_order *order, const tensor_map *map);
void planner_order_clear(planner_order *order);

/* Counts a read of [offset, end) against the tensors it overlaps, as planning a read does; for
 * reads served before the order existed (the header was still on its way). */
void planner_order_note_read(planner_order *order, uint64_t offset, uint64_t end);

/* Hands out the next tensors that were not handed out yet, up to bytes (at most max ranges): a
 * whole shard's prefetch, started before any reader comes to it. In the order the pattern
 * gives (its lowest layer first) when one is given, else in file order. */
size_t planner_order_bulk(planner_order *order, const planner_pattern *pattern, uint64_t bytes, plan_range *ranges,
                          size_t max);

/* Whether the order's last visits went along file order. */
bool planner_order_follows_file(const planner_order *order);

/* A tensor's prefetch range (from a plan or planner_order_bulk) the fs found no memory for: the
 * tensor may be handed out again, and no longer counts as prefetched and unread. */
void planner_order_prefetch_refused(planner_order *order, plan_range range);

void planner_plan_read(planner_streams *streams, const planner_file *file, const planner_config *config,
                       uint64_t offset, uint64_t length, read_plan *plan);

#endif
