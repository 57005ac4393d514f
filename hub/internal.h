/* internal.h — what the files of hub/ share: the client, one HTTP transfer, the event loop,
 * the retrying request helper and error construction. Private to hub/. */
#ifndef HUBFS_HUB_INTERNAL_H
#define HUBFS_HUB_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <curl/curl.h>

#include "hub.h"
#include "parse.h"

#define HUB_RETRY_WAIT_MAX_MS 60000L     /* longest Retry-After/RateLimit wait honoured */
#define HUB_ERROR_BODY_MAX 65536         /* bytes of an error answer kept for its message */
#define HUB_JSON_BODY_MAX (64u << 20)    /* one API answer (tree page, repo info) */
#define HUB_TREE_ENTRIES_MAX 1000000
#define HUB_TREE_PATH_BYTES_MAX ((size_t)256 << 20)   /* of paths in one listing */
#define HUB_TREE_PAGES_MAX 10000         /* the Hub pages by 1000: ten times the entry cap */
#define HUB_REDIRECTS_MAX 10

/* The headers hubfs reads; everything else is ignored. */
typedef enum hub_header_id {
    HUB_HDR_LOCATION,
    HUB_HDR_X_REPO_COMMIT,
    HUB_HDR_X_LINKED_ETAG,
    HUB_HDR_X_LINKED_SIZE,
    HUB_HDR_ETAG,
    HUB_HDR_CONTENT_LENGTH,
    HUB_HDR_CONTENT_RANGE,
    HUB_HDR_LINK,
    HUB_HDR_RETRY_AFTER,
    HUB_HDR_RATELIMIT,
    HUB_HDR_X_ERROR_CODE,
    HUB_HDR_X_ERROR_MESSAGE,
    HUB_HDR_COUNT
} hub_header_id;

typedef enum hub_body_sink {
    HUB_SINK_NONE,     /* HEAD, or the body does not matter */
    HUB_SINK_GROW,     /* malloc'd, up to body_max bytes */
    HUB_SINK_RANGE,    /* straight into the caller's buffer: range_len bytes at range_first */
} hub_body_sink;

/* One HTTP exchange. The caller fills the request part; the loop thread fills the answer
 * and signals done. Bodies of error answers (status >= 300) go to body, bounded. */
typedef struct hub_transfer {
    /* request */
    const char *url;
    bool head;
    bool send_token;
    hub_body_sink sink;
    size_t body_max;
    uint64_t range_first;
    size_t range_len;
    uint64_t file_size;          /* for checking a 206's Content-Range; 0 = unknown */
    char *range_buf;

    /* answer */
    long status;
    CURLcode curl_code;
    char curl_message[CURL_ERROR_SIZE];
    char *headers[HUB_HDR_COUNT];
    char *body;
    size_t body_len, body_cap;
    size_t range_received;       /* bytes written into range_buf, kept across attempts: a
                                  * retry asks only for the rest */
    uint64_t range_skip;         /* of a 200 that ignored the range: bytes still to skip */
    bool range_started;
    bool range_done;             /* everything asked for arrived; a later abort is success */
    const char *sink_problem;    /* why the write callback refused the body (protocol error) */
    bool range_ignored;          /* the server answered 200 to the ranged request */
    bool stalled;                /* no byte arrived for stall_timeout_ms: aborted */
    bool too_slow;               /* averaged less than min_rate_bytes_per_s after the grace */
    bool cancelled;              /* hub_client_cancel_all aborted it */

    /* the loop thread's working state */
    struct hub_client *client;
    CURL *easy;
    curl_off_t progress_bytes;   /* bytes moved when progress was last seen */
    int64_t progress_at_ms;      /* monotonic time of that */
    int64_t first_byte_at_ms;    /* when the body's first byte came; 0 before */

    /* completion, between the loop thread and the waiting caller */
    pthread_mutex_t mutex;
    pthread_cond_t done_cond;
    bool done;
    struct hub_transfer *next_queued;
} hub_transfer;

typedef struct hub_loop {
    CURLM *multi;
    CURLSH *share;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t queue_mutex;
    bool queue_mutex_ready;
    hub_transfer *queue_head, *queue_tail;
    bool stopping;
} hub_loop;

struct hub_client {
    hub_config cfg;
    long receive_buffer;                    /* SO_RCVBUF asked of each socket; 0: autotuning */
    hub_origin endpoint_origin;
    char *user_agent;
    struct curl_slist *headers_anonymous;   /* Accept-Encoding: identity */
    struct curl_slist *headers_with_token;  /* ... plus Authorization */
    hub_loop loop;
    atomic_bool cancelled;                  /* hub_client_cancel_all: abort, never start */
    pthread_mutex_t cancel_mutex;           /* with cancel_cond: retry waits end on cancel */
    pthread_cond_t cancel_cond;
    _Atomic uint64_t requests, bytes_received, retries, resolves, in_flight;
    hub_origin fallback_origin;             /* when cfg.fallback_endpoint is set */
    atomic_bool endpoint_down;              /* failed twice in a row, no answer since */
    _Atomic int64_t endpoint_down_until_ms; /* monotonic; requests go to the fallback until then */
    _Atomic uint64_t fallback_requests;
    _Atomic uint64_t first_byte_us;         /* smoothed; written by the loop thread only */
};

/* ---- config.c ---- */

/* dst's CA bundle and proxy strings become copies of src's (NULL where src has none); false
 * when out of memory (then the copies that failed are NULL). */
bool hub_config_copy_transport(hub_config *dst, const hub_config *src);

/* ---- http.c: the event loop ---- */
/* The receive buffer to ask of each socket for `wanted` bytes: wanted where the kernel grants it
 * whole (rmem_max, read from rmem_max_path: /proc/sys/net/core/rmem_max), else 0 (autotuning). */
long hub_receive_buffer_to_ask(long wanted, const char *rmem_max_path);
hub_status hub_loop_start(hub_client *client, hub_error *err);
void hub_loop_stop(hub_client *client);
/* Wakes the loop so that it aborts every running transfer (after client->cancelled is set). */
void hub_loop_wake(hub_client *client);
/* Queues t, wakes the loop and blocks until the answer is complete (one attempt). */
void hub_loop_run(hub_client *client, hub_transfer *t);

void hub_transfer_init(hub_transfer *t);
/* Frees the answer and makes t ready for another attempt, keeping the request part. */
void hub_transfer_reset_answer(hub_transfer *t);
void hub_transfer_destroy(hub_transfer *t);

/* ---- request.c: retries and error answers ---- */

/* What a call was about, for error messages. */
typedef struct hub_call {
    const hub_repo *repo;
    const char *revision;        /* NULL when not relevant */
    const char *path;            /* NULL when not relevant */
    const char *what;            /* "listing the tree", "resolving", ... */
} hub_call;

/* Runs t with retries (408/429/5xx/network, backoff, Retry-After) in the calling thread.
 * HUB_OK means a final HTTP answer arrived (any status the caller must now interpret); an
 * error means the retry budget ran out or the answer could not be used. */
hub_status hub_request(hub_client *client, hub_transfer *t, const hub_call *call, hub_error *err);

/* Turns an HTTP error answer (>= 300 that the caller does not handle) into a status and a
 * message the user can act on. */
hub_status hub_error_from_answer(hub_client *client, const hub_transfer *t, const hub_call *call,
                                 hub_error *err);

/* ---- fallback.c: the endpoint's health and the fallback endpoint ---- */

/* True for a URL on the endpoint's origin or the fallback endpoint's: the token's places. */
bool hub_url_is_hub(const hub_client *client, const char *url);

/* One request's dealings with the endpoint: where its attempts go and how many failed there. */
typedef struct hub_route {
    const char *asked_url;       /* the caller's URL (t->url is put back to it at the end) */
    char *fallback_url;          /* asked_url on the fallback endpoint, once needed */
    int endpoint_failures;       /* in a row, of the kind that means "down" */
    bool moved;                  /* moved to the fallback once already: never again */
} hub_route;

/* Points t->url at where this attempt goes: asked_url, or its twin on the fallback endpoint
 * while the endpoint is down. False when out of memory. */
bool hub_route_attempt(hub_client *client, hub_route *route, hub_transfer *t);
/* After an attempt (answered: a final HTTP answer; retryable: a failure worth retrying): a
 * failure on the endpoint that means it is down counts towards marking it down (true: it is
 * down now, move this request to the fallback without waiting, once); an answer from it marks
 * it up again. */
bool hub_route_outcome(hub_client *client, hub_route *route, const hub_transfer *t, bool answered,
                       bool retryable);
/* Puts t->url back and frees the route. */
void hub_route_end(hub_route *route, hub_transfer *t);

/* ---- errors.c ---- */

/* Sets err (when not NULL) with the message formatted, the token scrubbed out; returns status. */
hub_status hub_fail(const hub_client *client, hub_error *err, hub_status status, long http_status,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void hub_error_clear(hub_error *err);
hub_status hub_fail_offline(const hub_client *client, hub_error *err);
hub_status hub_fail_cancelled(const hub_client *client, hub_error *err);

/* "", "datasets/" or "spaces/" */
const char *hub_repo_url_prefix(hub_repo_type type);
/* "models", "datasets" or "spaces" */
const char *hub_repo_api_kind(hub_repo_type type);
/* Checks the repo argument of a public call. */
hub_status hub_check_repo(const hub_client *client, const hub_repo *repo, hub_error *err);

#endif
