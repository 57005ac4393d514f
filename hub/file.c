/* file.c — remote files: resolve once (HEAD, redirects followed by hand), then range reads on
 * the CDN URL until it expires or is refused, when it is resolved again once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "internal.h"

#define CDN_URL_DEFAULT_LIFETIME_S 3600   /* when a signed URL does not say */

struct hub_file {
    hub_client *client;
    hub_repo repo;               /* repo.id points to repo_id */
    char *repo_id, *revision, *path;
    char *resolve_url;
    hub_file_info info;

    pthread_mutex_t mutex;       /* guards the data URL fields, never held across a request */
    char *data_url;              /* the CDN URL, or the same-origin URL of a small file */
    bool data_url_sends_token;
    time_t data_url_expiry;      /* 0: does not expire */
    uint64_t generation;         /* bumped at every re-resolution */

    pthread_mutex_t resolve_mutex;   /* one re-resolution at a time */
};

/* What one resolution found. */
typedef struct resolution {
    hub_file_info info;
    bool have_size, have_etag;
    char *data_url;
    bool sends_token;
    time_t expiry;
} resolution;

/* X-Repo-Commit, X-Linked-Etag and X-Linked-Size exist only on the Hub's first answer. */
static void take_first_answer_headers(const hub_transfer *t, resolution *r)
{
    const char *commit = t->headers[HUB_HDR_X_REPO_COMMIT];
    if (commit && hub_is_hex(commit, HUB_SHA_HEX_LEN))
        for (int i = 0; i <= HUB_SHA_HEX_LEN; i++)
            r->info.commit[i] = (char)(commit[i] >= 'A' && commit[i] <= 'F' ? commit[i] + 32 : commit[i]);
    if (hub_parse_etag(t->headers[HUB_HDR_X_LINKED_ETAG], r->info.etag, sizeof r->info.etag)) {
        r->have_etag = true;
        r->info.is_lfs = true;
    }
    if (hub_parse_uint64(t->headers[HUB_HDR_X_LINKED_SIZE], &r->info.size))
        r->have_size = true;
}

/* Size and ETag of a plain 200 answer, for what the first answer did not say. */
static void take_final_answer_headers(const hub_transfer *t, resolution *r)
{
    if (!r->have_size && hub_parse_uint64(t->headers[HUB_HDR_CONTENT_LENGTH], &r->info.size))
        r->have_size = true;
    if (!r->have_etag && hub_parse_etag(t->headers[HUB_HDR_ETAG], r->info.etag, sizeof r->info.etag))
        r->have_etag = true;
}

/* HEAD of the CDN URL, without the token, when the Hub did not tell the size. */
static hub_status head_cdn(hub_client *client, const hub_call *call, resolution *r, hub_error *err)
{
    hub_transfer t;
    hub_transfer_init(&t);
    t.url = r->data_url;
    t.head = true;
    hub_status status = hub_request(client, &t, call, err);
    if (status == HUB_OK && t.status != 200)
        status = hub_error_from_answer(client, &t, call, err);
    if (status == HUB_OK)
        take_final_answer_headers(&t, r);
    hub_transfer_destroy(&t);
    return status;
}

static void set_data_url(hub_client *client, resolution *r, char *url)
{
    r->data_url = url;
    r->sends_token = client->cfg.token && hub_url_is_hub(client, url);
    r->expiry = 0;
    if (!r->sends_token && !hub_url_expiry(url, &r->expiry))
        r->expiry = time(NULL) + CDN_URL_DEFAULT_LIFETIME_S;
}

static hub_status finish_resolution(hub_client *client, const hub_file *file, const hub_call *call,
                                    resolution *r, hub_error *err)
{
    if (!r->have_size && r->data_url && !r->sends_token) {
        hub_status status = head_cdn(client, call, r, err);
        if (status != HUB_OK)
            return status;
    }
    if (!r->info.commit[0] && hub_is_hex(file->revision, HUB_SHA_HEX_LEN))
        for (int i = 0; i <= HUB_SHA_HEX_LEN; i++)
            r->info.commit[i] = file->revision[i];
    if (!r->have_size || !r->have_etag || !r->info.commit[0])
        return hub_fail(client, err, HUB_ERR_PROTOCOL, 0,
                        "the Hub's answer about %s in %s lacks its %s", file->path, file->repo_id,
                        !r->have_size ? "size" : !r->have_etag ? "ETag" : "commit (X-Repo-Commit)");
    if (hub_is_hex(file->revision, HUB_SHA_HEX_LEN) &&
        strcasecmp(file->revision, r->info.commit) != 0)
        return hub_fail(client, err, HUB_ERR_PROTOCOL, 0,
                        "the Hub served %s in %s from commit %s when commit %s was asked",
                        file->path, file->repo_id, r->info.commit, file->revision);
    if (!r->info.is_lfs && hub_is_hex(r->info.etag, 64))
        r->info.is_lfs = true;
    return HUB_OK;
}

/* One resolution: HEAD the resolve URL, following same-origin redirects with the token,
 * stopping at the first foreign origin (the CDN), which never sees the token. */
static hub_status resolve(hub_file *file, resolution *r, hub_error *err)
{
    hub_client *client = file->client;
    hub_call call = {.repo = &file->repo, .revision = file->revision, .path = file->path,
                     .what = "resolving"};
    memset(r, 0, sizeof *r);
    atomic_fetch_add_explicit(&client->resolves, 1, memory_order_relaxed);
    char *current = strdup(file->resolve_url);
    if (!current)
        return hub_fail(client, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
    hub_transfer t;
    hub_transfer_init(&t);
    hub_status status = HUB_OK;
    for (int redirects = 0; status == HUB_OK && !r->data_url; redirects++) {
        t.url = current;
        t.head = true;
        t.send_token = client->cfg.token != NULL;   /* current is always on the Hub's origin */
        status = hub_request(client, &t, &call, err);
        if (status != HUB_OK)
            break;
        if (redirects == 0)
            take_first_answer_headers(&t, r);
        if (t.status == 200) {
            take_final_answer_headers(&t, r);
            set_data_url(client, r, current);
            current = NULL;
            break;
        }
        if (t.status < 300 || t.status >= 400 || !t.headers[HUB_HDR_LOCATION]) {
            status = hub_error_from_answer(client, &t, &call, err);
            break;
        }
        char *next = hub_url_resolve(current, t.headers[HUB_HDR_LOCATION]);
        if (!next || redirects + 1 > HUB_REDIRECTS_MAX) {
            status = hub_fail(client, err, HUB_ERR_PROTOCOL, t.status,
                              next ? "too many redirects resolving %s in %s"
                                   : "the Hub redirected %s in %s to an invalid or non-http(s) location",
                              file->path, file->repo_id);
            free(next);
            break;
        }
        free(current);
        current = NULL;
        if (hub_url_is_hub(client, next))
            current = next;
        else
            set_data_url(client, r, next);
    }
    hub_transfer_destroy(&t);
    free(current);
    if (status == HUB_OK)
        status = finish_resolution(client, file, &call, r, err);
    if (status != HUB_OK) {
        free(r->data_url);
        r->data_url = NULL;
    }
    return status;
}

static char *build_resolve_url(const hub_client *client, const hub_repo *repo, const char *revision,
                               const char *path)
{
    char *encoded_revision = hub_url_encode(revision, false);
    char *encoded_path = hub_url_encode(path, true);
    char *url = NULL;
    if (encoded_revision && encoded_path &&
        asprintf(&url, "%s/%s%s/resolve/%s/%s", client->cfg.endpoint,
                 hub_repo_url_prefix(repo->type), repo->id, encoded_revision, encoded_path) < 0)
        url = NULL;
    free(encoded_revision);
    free(encoded_path);
    return url;
}

void hub_file_close(hub_file *file)
{
    if (!file)
        return;
    free(file->repo_id);
    free(file->revision);
    free(file->path);
    free(file->resolve_url);
    free(file->data_url);
    pthread_mutex_destroy(&file->mutex);
    pthread_mutex_destroy(&file->resolve_mutex);
    free(file);
}

hub_status hub_file_open(hub_client *client, const hub_repo *repo, const char *commit,
                         const char *path, hub_file **out, hub_error *err)
{
    hub_error_clear(err);
    *out = NULL;
    hub_status status = hub_check_repo(client, repo, err);
    if (status != HUB_OK)
        return status;
    if (!commit || !*commit || strlen(commit) > 256)
        return hub_fail(client, err, HUB_ERR_INVALID_ARGUMENT, 0, "a commit to read from is needed");
    if (!path || !hub_path_is_valid(path, strlen(path)))
        return hub_fail(client, err, HUB_ERR_INVALID_ARGUMENT, 0,
                        "\"%.200s\" is not a file path inside a repository", path ? path : "");
    if (client->cfg.offline)
        return hub_fail_offline(client, err);
    hub_file *file = calloc(1, sizeof *file);
    if (!file)
        return hub_fail(client, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
    pthread_mutex_init(&file->mutex, NULL);
    pthread_mutex_init(&file->resolve_mutex, NULL);
    file->client = client;
    file->repo_id = strdup(repo->id);
    file->revision = strdup(commit);
    file->path = strdup(path);
    file->repo.type = repo->type;
    file->repo.id = file->repo_id;
    file->resolve_url = build_resolve_url(client, repo, commit, path);
    if (!file->repo_id || !file->revision || !file->path || !file->resolve_url) {
        hub_file_close(file);
        return hub_fail(client, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
    }
    resolution r;
    status = resolve(file, &r, err);
    if (status != HUB_OK) {
        hub_file_close(file);
        return status;
    }
    file->info = r.info;
    file->data_url = r.data_url;
    file->data_url_sends_token = r.sends_token;
    file->data_url_expiry = r.expiry;
    *out = file;
    return HUB_OK;
}

const hub_file_info *hub_file_get_info(const hub_file *file) { return &file->info; }

/* Resolves again unless another reader already did since seen_generation. */
static hub_status refresh(hub_file *file, uint64_t seen_generation, hub_error *err)
{
    hub_status status = HUB_OK;
    pthread_mutex_lock(&file->resolve_mutex);
    pthread_mutex_lock(&file->mutex);
    bool stale = file->generation == seen_generation;
    pthread_mutex_unlock(&file->mutex);
    resolution r = {0};
    if (stale)
        status = resolve(file, &r, err);
    if (stale && status == HUB_OK &&
        (r.info.size != file->info.size || strcmp(r.info.etag, file->info.etag) != 0)) {
        status = hub_fail(file->client, err, HUB_ERR_PROTOCOL, 0,
                          "%s in %s at %s changed on the Hub while open (size or ETag differs)",
                          file->path, file->repo_id, file->revision);
        free(r.data_url);
    } else if (stale && status == HUB_OK) {
        pthread_mutex_lock(&file->mutex);
        free(file->data_url);
        file->data_url = r.data_url;
        file->data_url_sends_token = r.sends_token;
        file->data_url_expiry = r.expiry;
        file->generation++;
        pthread_mutex_unlock(&file->mutex);
    }
    pthread_mutex_unlock(&file->resolve_mutex);
    return status;
}

/* A private copy of the current data URL (it may be replaced while a read runs). */
static char *snapshot_url(hub_file *file, bool *sends_token, time_t *expiry, uint64_t *generation)
{
    pthread_mutex_lock(&file->mutex);
    char *url = strdup(file->data_url);
    *sends_token = file->data_url_sends_token;
    *expiry = file->data_url_expiry;
    *generation = file->generation;
    pthread_mutex_unlock(&file->mutex);
    return url;
}

static bool url_refused(long status)
{
    return status == 401 || status == 403 || status == 410 || (status >= 300 && status < 400);
}

hub_status hub_file_read(hub_file *file, uint64_t offset, void *buf, size_t len, hub_error *err)
{
    hub_error_clear(err);
    if (!file || (!buf && len))
        return hub_fail(NULL, err, HUB_ERR_INVALID_ARGUMENT, 0, "no file or buffer to read into");
    hub_client *client = file->client;
    if (offset > file->info.size || len > file->info.size - offset)
        return hub_fail(client, err, HUB_ERR_INVALID_ARGUMENT, 0,
                        "read of %zu bytes at %llu passes the end of %s (%llu bytes)", len,
                        (unsigned long long)offset, file->path,
                        (unsigned long long)file->info.size);
    if (len == 0)
        return HUB_OK;
    if (client->cfg.offline)
        return hub_fail_offline(client, err);
    hub_call call = {.repo = &file->repo, .revision = file->revision, .path = file->path,
                     .what = "reading"};
    bool resolved_again = false;
    size_t in_place = 0;                  /* kept when a refused URL is resolved again */
    for (;;) {
        bool sends_token;
        time_t expiry;
        uint64_t generation;
        char *url = snapshot_url(file, &sends_token, &expiry, &generation);
        if (!url)
            return hub_fail(client, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
        if (expiry && time(NULL) >= expiry && !resolved_again) {
            free(url);
            resolved_again = true;
            hub_status status = refresh(file, generation, err);
            if (status != HUB_OK)
                return status;
            continue;
        }
        hub_transfer t;
        hub_transfer_init(&t);
        t.url = url;
        t.send_token = sends_token;
        t.sink = HUB_SINK_RANGE;
        t.range_first = offset;
        t.range_len = len;
        t.range_buf = buf;
        t.range_received = in_place;
        t.file_size = file->info.size;
        hub_status status = hub_request(client, &t, &call, err);
        in_place = t.range_received;
        bool refused = status == HUB_OK && url_refused(t.status);
        if (status == HUB_OK && !refused && t.status != 200 && t.status != 206)
            status = hub_error_from_answer(client, &t, &call, err);
        else if (refused && resolved_again)
            status = hub_fail(client, err, sends_token ? HUB_ERR_UNAUTHORIZED : HUB_ERR_PROTOCOL,
                              t.status,
                              "%s refused a freshly resolved URL of %s in %s (HTTP %ld)%s",
                              sends_token ? "the Hub" : "the CDN", file->path, file->repo_id,
                              t.status, sends_token ? ": check HF_TOKEN" : "");
        hub_transfer_destroy(&t);
        free(url);
        if (!refused || resolved_again)
            return status;
        resolved_again = true;            /* expired or revoked signature: resolve once more */
        status = refresh(file, generation, err);
        if (status != HUB_OK)
            return status;
    }
}

hub_status hub_fetch_small_file(hub_client *client, const hub_repo *repo, const char *commit,
                                const char *path, size_t max_size, char **data_out,
                                size_t *size_out, hub_error *err)
{
    *data_out = NULL;
    *size_out = 0;
    hub_file *file;
    hub_status status = hub_file_open(client, repo, commit, path, &file, err);
    if (status != HUB_OK)
        return status;
    uint64_t size = file->info.size;
    char *data = NULL;
    if (size > max_size || size >= SIZE_MAX)
        status = hub_fail(client, err, HUB_ERR_INVALID_ARGUMENT, 0,
                          "%s in %s is %llu bytes, more than the %zu allowed here", path, repo->id,
                          (unsigned long long)size, max_size);
    else if (!(data = malloc((size_t)size + 1)))
        status = hub_fail(client, err, HUB_ERR_NO_MEMORY, 0, "out of memory for %s", path);
    else
        status = hub_file_read(file, 0, data, (size_t)size, err);
    hub_file_close(file);
    if (status != HUB_OK) {
        free(data);
        return status;
    }
    data[size] = '\0';
    *data_out = data;
    *size_out = (size_t)size;
    return HUB_OK;
}
