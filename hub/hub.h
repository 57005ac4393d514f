/* hub.h — the Hugging Face Hub client: revisions, tree listing, resolve, range reads.
 *
 * Thread-safe: one hub_client may be used from any number of threads. All transfers run on
 * one internal event-loop thread that owns a curl multi handle (connection reuse, HTTP/2 where
 * offered); calls block the calling thread only, never a lock shared with other callers.
 * Errors are returned as a hub_status plus a message a user can act on; nothing is printed.
 */
#ifndef HUBFS_HUB_H
#define HUBFS_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HUB_SHA_HEX_LEN 40
#define HUB_ERROR_MESSAGE_MAX 512

typedef enum hub_status {
    HUB_OK = 0,
    HUB_ERR_INVALID_ARGUMENT,   /* caller passed something unusable (bad repo id, path) */
    HUB_ERR_UNAUTHORIZED,       /* token missing or refused */
    HUB_ERR_GATED,              /* terms must be accepted on the model page */
    HUB_ERR_DISABLED,           /* repo disabled by the Hub */
    HUB_ERR_REPO_NOT_FOUND,     /* missing, or private and not visible with this token */
    HUB_ERR_REVISION_NOT_FOUND,
    HUB_ERR_ENTRY_NOT_FOUND,
    HUB_ERR_RANGE_NOT_SATISFIABLE,
    HUB_ERR_RATE_LIMITED,       /* still 429 after the retry budget */
    HUB_ERR_SERVER,             /* 5xx after the retry budget */
    HUB_ERR_NETWORK,            /* connect failure, reset, stall timeout after the retry budget */
    HUB_ERR_PROTOCOL,           /* malformed or inconsistent answer from the server */
    HUB_ERR_OFFLINE,            /* HF_HUB_OFFLINE=1 forbids network */
    HUB_ERR_NO_MEMORY,
    HUB_ERR_CANCELLED,          /* hub_client_cancel_all was called (shutting down) */
} hub_status;

typedef struct hub_error {
    hub_status status;
    long http_status;                        /* 0 when no HTTP answer was involved */
    char message[HUB_ERROR_MESSAGE_MAX];     /* never contains the token */
} hub_error;

/* Short stable name of a status, e.g. "gated". */
const char *hub_status_name(hub_status status);

#define HUB_ENDPOINT_DOWN_HOLD_MS 30000L   /* how long a failed endpoint is left alone */

typedef enum hub_endpoint_event {
    HUB_ENDPOINT_DOWN,           /* the endpoint failed: see hub_config.fallback_endpoint */
    HUB_ENDPOINT_BACK,           /* it answered again */
    HUB_FALLBACK_REQUEST,        /* one request went to the fallback endpoint */
} hub_endpoint_event;

#define HUB_RECEIVE_BUFFER_MAX (1L << 30)   /* SO_RCVBUF is an int, and the kernel doubles it */
#define HUB_RECEIVE_BUFFER_DEFAULT (4L << 20)   /* why: hub/http.c, hub_receive_buffer_to_ask */

typedef struct hub_config {
    char *endpoint;              /* HF_ENDPOINT or https://huggingface.co, no trailing '/' */
    char *token;                 /* NULL when anonymous */
    /* Where requests for the endpoint go while it is down, e.g. https://huggingface.co behind a
     * site cache given as endpoint; NULL: none. The token goes to both, never elsewhere. The
     * rule: two failures in a row of one request to the endpoint (network error, stall, HTTP
     * 502/503/504) mark it down for HUB_ENDPOINT_DOWN_HOLD_MS; meanwhile every request for it
     * goes to the fallback (same path and query) with its own retries, then it is tried again.
     * An answer of any other kind from the endpoint marks it up. */
    char *fallback_endpoint;
    bool offline;                /* HF_HUB_OFFLINE */
    long connect_timeout_ms;     /* HF_HUB_ETAG_TIMEOUT seconds, default 10 s */
    long stall_timeout_ms;       /* a transfer with no progress this long fails; HF_HUB_DOWNLOAD_TIMEOUT */
    /* After stall_timeout_ms (the grace period), an attempt whose body averages less than this
     * many bytes/s is abandoned (and retried): a trickle is no better than a stall. 0: off. */
    long min_rate_bytes_per_s;
    int max_retries;             /* for 408/429/5xx/network errors; default 5 */
    long backoff_initial_ms;     /* default 1000, doubling */
    long backoff_max_ms;         /* default 8000; Retry-After/RateLimit may ask longer (capped at 60 s) */
    int max_connections;         /* per host; default 16 */
    /* Receive buffer (SO_RCVBUF) each connection asks for, in bytes; 0 leaves the kernel's
     * autotuning. Asked only where net.core.rmem_max grants it whole. Default
     * HUB_RECEIVE_BUFFER_DEFAULT, at most HUB_RECEIVE_BUFFER_MAX. */
    long receive_buffer_bytes;

    /* TLS: certificates are always verified (peer and host name), for the Hub and the CDN. */
    char *ca_bundle;             /* CAs trusted instead of the system store (a PEM file, or a
                                    directory hashed by `openssl rehash`); NULL: the system store */
    bool ca_bundle_is_directory;
    const char *ca_bundle_origin; /* a static name of what chose it ("CURL_CA_BUNDLE", ...) */

    /* Proxies as URLs ("http://proxy:3128"); NULL: direct. https:// transfers tunnel through
     * CONNECT, so the proxy sees the token only inside TLS. */
    char *https_proxy;           /* https_proxy, HTTPS_PROXY, all_proxy, ALL_PROXY */
    char *http_proxy;            /* http_proxy, HTTP_PROXY (not under CGI), all_proxy, ALL_PROXY */
    char *no_proxy;              /* no_proxy, NO_PROXY: hosts reached directly, as curl reads it */

    /* Told (from any thread) when the endpoint goes down or comes back, with a message that
     * says which endpoint, why and where requests go meanwhile, and of each request sent to the
     * fallback (message NULL). NULL: not told. */
    void (*on_endpoint_event)(void *arg, hub_endpoint_event event, const char *message);
    void *on_endpoint_event_arg;
} hub_config;

/* Fills cfg from defaults and the environment (HF_ENDPOINT, HF_TOKEN, HUGGING_FACE_HUB_TOKEN,
 * HF_TOKEN_PATH, HF_HOME, HF_HUB_OFFLINE, timeouts; the CA bundle from CURL_CA_BUNDLE, else
 * REQUESTS_CA_BUNDLE, else SSL_CERT_FILE; the proxy variables). Free with hub_config_clear. */
hub_status hub_config_from_env(hub_config *cfg, hub_error *err);
void hub_config_clear(hub_config *cfg);

/* Replaces cfg's token with the one in the file at path (e.g. --token-file): the whole file,
 * whitespace around the token stripped, empty meaning anonymous. Checked as HF_TOKEN and the
 * token files hub_config_from_env reads are: whitespace, control or non-ASCII characters
 * inside the token (a CR LF would inject a header) are refused with a message naming the
 * file. Fails when the file cannot be read. */
hub_status hub_config_read_token_file(hub_config *cfg, const char *path, hub_error *err);

/* Trusts the CAs of path (a PEM file or a hashed directory) instead of the system store;
 * origin names where path came from, for messages (a static string, e.g. "--ca-bundle").
 * Fails when path cannot be read. */
hub_status hub_config_set_ca_bundle(hub_config *cfg, const char *path, const char *origin,
                                    hub_error *err);

typedef struct hub_client hub_client;

/* Copies cfg; starts the event-loop thread. hub_client_free must come after every call and
 * every hub_file of the client has finished. */
hub_status hub_client_new(const hub_config *cfg, hub_client **out, hub_error *err);
void hub_client_free(hub_client *client);

/* Aborts every transfer in flight and every retry wait, and makes later calls fail at once with
 * HUB_ERR_CANCELLED: what an unmount does before it waits for its threads. Irreversible. */
void hub_client_cancel_all(hub_client *client);

typedef enum hub_repo_type { HUB_REPO_MODEL, HUB_REPO_DATASET, HUB_REPO_SPACE } hub_repo_type;

typedef struct hub_repo {
    hub_repo_type type;
    const char *id;              /* "org/name" */
} hub_repo;

/* True when revision is a commit SHA as the Hub writes it: 40 lowercase hex digits. */
bool hub_is_commit_sha(const char *revision);

/* Pins a branch, tag, refs/pr/N or commit to its 40-hex commit SHA (repo info call). A commit
 * SHA is checked with the Hub too (it must exist), except offline, where it is returned as is. */
hub_status hub_resolve_revision(hub_client *client, const hub_repo *repo, const char *revision,
                                char commit_out[HUB_SHA_HEX_LEN + 1], hub_error *err);

typedef struct hub_revision_info {
    char commit[HUB_SHA_HEX_LEN + 1];
    /* The commit's date ("lastModified" of the repo info at that revision), Unix seconds: the
     * same on every machine, so it can stand for the files' modification time. 0 when the Hub
     * did not say (and offline, where a commit SHA is taken as is). */
    int64_t date;
} hub_revision_info;

/* hub_resolve_revision, with the commit's date. */
hub_status hub_resolve_revision_info(hub_client *client, const hub_repo *repo, const char *revision,
                                     hub_revision_info *out, hub_error *err);

typedef struct hub_repo_list {
    char **names;                /* NAME of each AUTHOR/NAME listed, in the Hub's order */
    size_t count, capacity;
    bool complete;               /* every page was read and kept: a name missing here is no repo
                                    of the author's that the token can see */
} hub_repo_list;

/* The repos of a type that author (a user or an organisation) owns, from the Hub's listing API
 * (GET /api/models?author=AUTHOR, or datasets, spaces), paged by its Link headers as
 * huggingface_hub's list_models(author=...) does: those the token may see, private ones
 * included. Reads at most max_pages pages and keeps at most max_names names (complete is false
 * when either stopped it). An author with no repos is HUB_OK with count 0. */
hub_status hub_list_repos(hub_client *client, hub_repo_type type, const char *author, size_t max_names,
                          size_t max_pages, hub_repo_list *out, hub_error *err);
/* Appends a copy of name; false when out of memory. */
bool hub_repo_list_add(hub_repo_list *list, const char *name);
void hub_repo_list_free(hub_repo_list *list);

typedef struct hub_tree_entry {
    char *path;                  /* relative to the repo root, validated: no "..", ".", empty parts */
    bool is_directory;
    uint64_t size;
    char oid[HUB_SHA_HEX_LEN + 1];   /* git blob or tree sha1 */
    bool is_lfs;
    char lfs_sha256[65];          /* when is_lfs */
} hub_tree_entry;

#define HUB_TREE_SKIPPED_SHOWN_MAX 256

typedef struct hub_tree {
    hub_tree_entry *entries;
    size_t count;
    /* Entries left out because no filesystem path can show them (a control character such as
     * a newline in a name, a name over 255 bytes, a path over 4096 bytes, a "." or ".." part):
     * how many, and the first few, sanitized to printable ASCII, each with its reason. */
    size_t skipped;
    char skipped_shown[HUB_TREE_SKIPPED_SHOWN_MAX];
    /* "" for a whole listing; else why it was cut short (the entries before the cut are kept,
     * the rest never fetched), e.g. "more than 1000000 entries". */
    char truncated[96];
} hub_tree;

/* Recursive listing of the whole repo at commit (follows every page). The listing is cut at
 * 1,000,000 entries or 256 MiB of paths; entries no filesystem can show are left out (see
 * hub_tree). */
hub_status hub_list_tree(hub_client *client, const hub_repo *repo, const char *commit,
                         hub_tree *out, hub_error *err);
void hub_tree_free(hub_tree *tree);

/* A remote file, resolved once: the CDN URL is cached until it expires or is refused, then
 * resolved again (once) transparently. */
typedef struct hub_file hub_file;

typedef struct hub_file_info {
    uint64_t size;
    char etag[80];               /* sha256 for LFS files, git blob sha1 otherwise; no quotes */
    char commit[HUB_SHA_HEX_LEN + 1];
    bool is_lfs;
} hub_file_info;

hub_status hub_file_open(hub_client *client, const hub_repo *repo, const char *commit,
                         const char *path, hub_file **out, hub_error *err);
const hub_file_info *hub_file_get_info(const hub_file *file);

/* Reads exactly len bytes at offset into buf (offset + len must not pass the file size).
 * Blocking; may be called concurrently on the same file. Retries per the config. */
hub_status hub_file_read(hub_file *file, uint64_t offset, void *buf, size_t len, hub_error *err);
void hub_file_close(hub_file *file);

/* Fetches a small whole file (config.json, index json) into a malloc'd buffer. */
hub_status hub_fetch_small_file(hub_client *client, const hub_repo *repo, const char *commit,
                                const char *path, size_t max_size, char **data_out,
                                size_t *size_out, hub_error *err);

typedef struct hub_counters {
    uint64_t requests;           /* HTTP requests sent, retries included */
    uint64_t bytes_received;     /* body bytes */
    uint64_t retries;
    uint64_t resolves;
    uint64_t in_flight;
    uint64_t fallback_requests;  /* sent to the fallback endpoint while the endpoint was down */
    uint64_t first_byte_us;      /* hub_first_byte_us */
} hub_counters;

void hub_get_counters(hub_client *client, hub_counters *out);

/* How long a range read waits for its first byte once its request is sent (connecting not
 * counted): a moving average over the latest reads, in microseconds; 0 before the first. What a
 * reader keeping a link busy must have in flight grows with it. */
uint64_t hub_first_byte_us(hub_client *client);

const char *hub_version(void);

#endif
