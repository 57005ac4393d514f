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
} hub_status;

typedef struct hub_error {
    hub_status status;
    long http_status;                        /* 0 when no HTTP answer was involved */
    char message[HUB_ERROR_MESSAGE_MAX];     /* never contains the token */
} hub_error;

/* Short stable name of a status, e.g. "gated". */
const char *hub_status_name(hub_status status);

typedef struct hub_config {
    char *endpoint;              /* HF_ENDPOINT or https://huggingface.co, no trailing '/' */
    char *token;                 /* NULL when anonymous */
    bool offline;                /* HF_HUB_OFFLINE */
    long connect_timeout_ms;     /* HF_HUB_ETAG_TIMEOUT seconds, default 10 s */
    long stall_timeout_ms;       /* a transfer with no progress this long fails; HF_HUB_DOWNLOAD_TIMEOUT */
    int max_retries;             /* for 408/429/5xx/network errors; default 5 */
    long backoff_initial_ms;     /* default 1000, doubling */
    long backoff_max_ms;         /* default 8000; Retry-After/RateLimit may ask longer (capped at 60 s) */
    int max_connections;         /* per host; default 16 */
} hub_config;

/* Fills cfg from defaults and the environment (HF_ENDPOINT, HF_TOKEN, HUGGING_FACE_HUB_TOKEN,
 * HF_TOKEN_PATH, HF_HOME, HF_HUB_OFFLINE, timeouts). Free with hub_config_clear. */
hub_status hub_config_from_env(hub_config *cfg, hub_error *err);
void hub_config_clear(hub_config *cfg);

typedef struct hub_client hub_client;

/* Copies cfg; starts the event-loop thread. hub_client_free must come after every call and
 * every hub_file of the client has finished. */
hub_status hub_client_new(const hub_config *cfg, hub_client **out, hub_error *err);
void hub_client_free(hub_client *client);

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

typedef struct hub_tree_entry {
    char *path;                  /* relative to the repo root, validated: no "..", ".", empty parts */
    bool is_directory;
    uint64_t size;
    char oid[HUB_SHA_HEX_LEN + 1];   /* git blob or tree sha1 */
    bool is_lfs;
    char lfs_sha256[65];          /* when is_lfs */
} hub_tree_entry;

typedef struct hub_tree {
    hub_tree_entry *entries;
    size_t count;
} hub_tree;

/* Recursive listing of the whole repo at commit (follows every page). */
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
} hub_counters;

void hub_get_counters(hub_client *client, hub_counters *out);

const char *hub_version(void);

#endif
