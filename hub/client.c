/* client.c — the client's life cycle, revisions, tree listing and counters. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

static pthread_once_t curl_global_once = PTHREAD_ONCE_INIT;
static CURLcode curl_global_status;

static void init_curl_globally(void)
{
    curl_global_status = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static hub_status check_config(const hub_config *cfg, hub_error *err)
{
    hub_origin origin;
    if (!cfg || !cfg->endpoint || !hub_url_origin(cfg->endpoint, &origin))
        return hub_fail(NULL, err, HUB_ERR_INVALID_ARGUMENT, 0,
                        "the Hub endpoint must be an http:// or https:// URL");
    if (cfg->fallback_endpoint && !hub_url_origin(cfg->fallback_endpoint, &origin))
        return hub_fail(NULL, err, HUB_ERR_INVALID_ARGUMENT, 0,
                        "the fallback endpoint must be an http:// or https:// URL, not \"%.200s\"",
                        cfg->fallback_endpoint);
    if (cfg->connect_timeout_ms <= 0 || cfg->stall_timeout_ms <= 0 || cfg->max_retries < 0 ||
        cfg->backoff_initial_ms <= 0 || cfg->backoff_max_ms < cfg->backoff_initial_ms ||
        cfg->max_connections <= 0 || cfg->min_rate_bytes_per_s < 0 ||
        cfg->receive_buffer_bytes < 0 || cfg->receive_buffer_bytes > HUB_RECEIVE_BUFFER_MAX)
        return hub_fail(NULL, err, HUB_ERR_INVALID_ARGUMENT, 0,
                        "invalid Hub client configuration: timeouts, backoff and connections must "
                        "be positive, retries not negative, the receive buffer at most 1 GiB");
    return HUB_OK;
}

static hub_status copy_config(hub_client *client, const hub_config *cfg, hub_error *err)
{
    client->cfg = *cfg;
    client->cfg.endpoint = strdup(cfg->endpoint);
    client->cfg.fallback_endpoint = cfg->fallback_endpoint ? strdup(cfg->fallback_endpoint) : NULL;
    client->cfg.token = cfg->token && *cfg->token ? strdup(cfg->token) : NULL;
    bool transport_copied = hub_config_copy_transport(&client->cfg, cfg);
    char *endpoints[] = {client->cfg.endpoint, client->cfg.fallback_endpoint};
    for (size_t i = 0; i < 2; i++) {
        size_t len = endpoints[i] ? strlen(endpoints[i]) : 0;
        while (len > 0 && endpoints[i][len - 1] == '/')
            endpoints[i][--len] = '\0';
    }
    if (!client->cfg.endpoint || (cfg->token && *cfg->token && !client->cfg.token) ||
        (cfg->fallback_endpoint && !client->cfg.fallback_endpoint) || !transport_copied)
        return hub_fail(NULL, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
    hub_url_origin(client->cfg.endpoint, &client->endpoint_origin);
    if (client->cfg.fallback_endpoint)
        hub_url_origin(client->cfg.fallback_endpoint, &client->fallback_origin);
    return HUB_OK;
}

static hub_status build_headers(hub_client *client, hub_error *err)
{
    const curl_version_info_data *curl_info = curl_version_info(CURLVERSION_NOW);
    if (asprintf(&client->user_agent, "hubfs/%s; libcurl/%s", hub_version(), curl_info->version) < 0) {
        client->user_agent = NULL;
        return hub_fail(NULL, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
    }
    /* identity: byte ranges must address the stored bytes, not a compressed form */
    client->headers_anonymous = curl_slist_append(NULL, "Accept-Encoding: identity");
    client->headers_with_token = curl_slist_append(NULL, "Accept-Encoding: identity");
    if (!client->headers_anonymous || !client->headers_with_token)
        return hub_fail(NULL, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
    if (client->cfg.token) {
        char *authorization = NULL;
        if (asprintf(&authorization, "Authorization: Bearer %s", client->cfg.token) < 0)
            return hub_fail(NULL, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
        struct curl_slist *grown = curl_slist_append(client->headers_with_token, authorization);
        explicit_bzero(authorization, strlen(authorization));
        free(authorization);
        if (!grown)
            return hub_fail(NULL, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
        client->headers_with_token = grown;
    }
    return HUB_OK;
}

/* Frees a header list, first zeroing each header's text: one holds the token. */
static void free_headers_wiped(struct curl_slist *headers)
{
    for (struct curl_slist *header = headers; header; header = header->next)
        explicit_bzero(header->data, strlen(header->data));
    curl_slist_free_all(headers);
}

hub_status hub_client_new(const hub_config *cfg, hub_client **out, hub_error *err)
{
    hub_error_clear(err);
    *out = NULL;
    hub_status status = check_config(cfg, err);
    if (status != HUB_OK)
        return status;
    pthread_once(&curl_global_once, init_curl_globally);
    if (curl_global_status != CURLE_OK)
        return hub_fail(NULL, err, HUB_ERR_NO_MEMORY, 0, "libcurl failed to initialize: %s",
                        curl_easy_strerror(curl_global_status));
    hub_client *client = calloc(1, sizeof *client);
    if (!client)
        return hub_fail(NULL, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
    pthread_mutex_init(&client->cancel_mutex, NULL);
    pthread_condattr_t monotonic;
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_cond_init(&client->cancel_cond, &monotonic);
    pthread_condattr_destroy(&monotonic);
    status = copy_config(client, cfg, err);
    if (status == HUB_OK)
        status = build_headers(client, err);
    if (status == HUB_OK)
        status = hub_loop_start(client, err);
    if (status != HUB_OK) {
        hub_client_free(client);
        return status;
    }
    *out = client;
    return HUB_OK;
}

void hub_client_free(hub_client *client)
{
    if (!client)
        return;
    hub_loop_stop(client);
    curl_slist_free_all(client->headers_anonymous);
    free_headers_wiped(client->headers_with_token);
    free(client->user_agent);
    hub_config_clear(&client->cfg);
    pthread_cond_destroy(&client->cancel_cond);
    pthread_mutex_destroy(&client->cancel_mutex);
    free(client);
}

void hub_client_cancel_all(hub_client *client)
{
    pthread_mutex_lock(&client->cancel_mutex);
    atomic_store(&client->cancelled, true);
    pthread_cond_broadcast(&client->cancel_cond);
    pthread_mutex_unlock(&client->cancel_mutex);
    hub_loop_wake(client);
}

void hub_get_counters(hub_client *client, hub_counters *out)
{
    out->requests = atomic_load(&client->requests);
    out->bytes_received = atomic_load(&client->bytes_received);
    out->retries = atomic_load(&client->retries);
    out->resolves = atomic_load(&client->resolves);
    out->in_flight = atomic_load(&client->in_flight);
    out->fallback_requests = atomic_load(&client->fallback_requests);
    out->first_byte_us = hub_first_byte_us(client);
}

uint64_t hub_first_byte_us(hub_client *client)
{
    return atomic_load_explicit(&client->first_byte_us, memory_order_relaxed);
}

/* GET of an API URL into t->body, following same-origin redirects (renamed repos) by hand.
 * On HUB_OK t holds the final answer, whatever its status. */
static hub_status api_get(hub_client *client, const char *url, const hub_call *call,
                          hub_transfer *t, hub_error *err)
{
    char *current = strdup(url);
    hub_status status = current ? HUB_OK : HUB_ERR_NO_MEMORY;
    for (int redirects = 0; status == HUB_OK; redirects++) {
        t->url = current;
        t->send_token = client->cfg.token != NULL;
        t->sink = HUB_SINK_GROW;
        t->body_max = HUB_JSON_BODY_MAX;
        status = hub_request(client, t, call, err);
        if (status != HUB_OK || t->status < 300 || t->status >= 400 || !t->headers[HUB_HDR_LOCATION])
            break;
        char *next = hub_url_resolve(current, t->headers[HUB_HDR_LOCATION]);
        if (!next || !hub_url_is_hub(client, next) || redirects >= HUB_REDIRECTS_MAX)
            status = hub_fail(client, err, HUB_ERR_PROTOCOL, t->status,
                              "the Hub redirected %s %s to an unusable or foreign location",
                              call->what, call->repo->id);
        free(current);
        current = next;
    }
    t->url = NULL;
    free(current);
    if (status == HUB_ERR_NO_MEMORY)
        hub_fail(client, err, status, 0, "out of memory");
    return status;
}

hub_status hub_resolve_revision_info(hub_client *client, const hub_repo *repo, const char *revision,
                                     hub_revision_info *out, hub_error *err)
{
    hub_error_clear(err);
    out->date = 0;
    hub_status status = hub_check_repo(client, repo, err);
    if (status != HUB_OK)
        return status;
    if (!revision || !*revision || strlen(revision) > 256)
        return hub_fail(client, err, HUB_ERR_INVALID_ARGUMENT, 0,
                        "a revision (branch, tag or commit) of 1 to 256 bytes is needed");
    if (client->cfg.offline && hub_is_hex(revision, HUB_SHA_HEX_LEN)) {
        /* offline, a commit is taken on trust: only the cache can serve it anyway */
        for (int i = 0; i <= HUB_SHA_HEX_LEN; i++)
            out->commit[i] = (char)tolower((unsigned char)revision[i]);
        return HUB_OK;
    }
    if (client->cfg.offline)
        return hub_fail_offline(client, err);
    char *encoded = hub_url_encode(revision, false);
    char *url = NULL;
    if (!encoded || asprintf(&url, "%s/api/%s/%s/revision/%s", client->cfg.endpoint,
                             hub_repo_api_kind(repo->type), repo->id, encoded) < 0) {
        free(encoded);
        return hub_fail(client, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
    }
    free(encoded);
    hub_call call = {.repo = repo, .revision = revision, .what = "resolving the revision of"};
    hub_transfer t;
    hub_transfer_init(&t);
    status = api_get(client, url, &call, &t, err);
    if (status == HUB_OK && t.status != 200)
        status = hub_error_from_answer(client, &t, &call, err);
    else if (status == HUB_OK && !hub_parse_repo_info_sha(t.body, t.body_len, out->commit))
        status = hub_fail(client, err, HUB_ERR_PROTOCOL, t.status,
                          "the Hub's answer about %s revision \"%s\" has no valid 40-hex \"sha\"",
                          repo->id, revision);
    if (status == HUB_OK && !hub_parse_repo_info_date(t.body, t.body_len, &out->date))
        out->date = 0;
    hub_transfer_destroy(&t);
    free(url);
    return status;
}

hub_status hub_resolve_revision(hub_client *client, const hub_repo *repo, const char *revision,
                                char commit_out[HUB_SHA_HEX_LEN + 1], hub_error *err)
{
    hub_revision_info info;
    hub_status status = hub_resolve_revision_info(client, repo, revision, &info, err);
    if (status == HUB_OK)
        memcpy(commit_out, info.commit, sizeof info.commit);
    return status;
}

/* A listing read page after page: what it is called in messages and how a page is read. */
typedef struct paged_listing {
    const char *noun;            /* "tree listing", "repo listing" */
    const char *subject;         /* whose: a repo id, an author */
    hub_status (*parse_page)(const char *body, size_t len, void *builder, char *why, size_t why_cap);
    void *builder;
    bool (*is_cut)(const void *builder);   /* a limit was reached: no more pages */
} paged_listing;

/* Fetches one page into the listing's builder; *next_url gets the next page's URL or NULL. */
static hub_status fetch_listing_page(hub_client *client, const char *url, const hub_call *call,
                                     const paged_listing *listing, char **next_url, hub_error *err)
{
    *next_url = NULL;
    hub_transfer t;
    hub_transfer_init(&t);
    hub_status status = api_get(client, url, call, &t, err);
    if (status == HUB_OK && t.status != 200)
        status = hub_error_from_answer(client, &t, call, err);
    if (status == HUB_OK) {
        char why[256];
        status = listing->parse_page(t.body, t.body_len, listing->builder, why, sizeof why);
        if (status != HUB_OK)
            hub_fail(client, err, status, t.status, "bad %s of %s%s%s: %s", listing->noun,
                     listing->subject, call->revision ? " at " : "",
                     call->revision ? call->revision : "", why);
    }
    if (status == HUB_OK && hub_parse_link_next(t.headers[HUB_HDR_LINK], next_url) &&
        !hub_url_is_hub(client, *next_url)) {
        free(*next_url);
        *next_url = NULL;
        status = hub_fail(client, err, HUB_ERR_PROTOCOL, t.status,
                          "the %s of %s points its next page outside %s: refused", listing->noun,
                          listing->subject, client->cfg.endpoint);
    }
    hub_transfer_destroy(&t);
    return status;
}

/* The URLs of the pages of one listing so far, so that a server linking back to a page it
 * already sent (A -> B -> A ...) is caught at once instead of after thousands of requests. */
typedef struct page_trail {
    char **urls;
    uint64_t *hashes;
    size_t count;
} page_trail;

static uint64_t url_hash(const char *url)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)url; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h;
}

/* The page number (1-based) url already had, or 0. */
static size_t trail_find(const page_trail *trail, const char *url, uint64_t hash)
{
    for (size_t i = 0; i < trail->count; i++)
        if (trail->hashes[i] == hash && strcmp(trail->urls[i], url) == 0)
            return i + 1;
    return 0;
}

/* Takes url over as the next page; false when out of memory (url is then freed). */
static bool trail_add(page_trail *trail, char *url, uint64_t hash)
{
    char **urls = realloc(trail->urls, (trail->count + 1) * sizeof *urls);
    if (urls)
        trail->urls = urls;
    uint64_t *hashes = urls ? realloc(trail->hashes, (trail->count + 1) * sizeof *hashes) : NULL;
    if (hashes)
        trail->hashes = hashes;
    if (!urls || !hashes) {
        free(url);
        return false;
    }
    trail->urls[trail->count] = url;
    trail->hashes[trail->count++] = hash;
    return true;
}

static void trail_free(page_trail *trail)
{
    for (size_t i = 0; i < trail->count; i++)
        free(trail->urls[i]);
    free(trail->urls);
    free(trail->hashes);
}

/* Accepts next (taking it over) as the listing's next page, or fails: a page seen before, or
 * too many pages. */
static hub_status follow_page(hub_client *client, page_trail *trail, char *next,
                              const paged_listing *listing, hub_error *err)
{
    uint64_t hash = url_hash(next);
    size_t seen_as = trail_find(trail, next, hash);
    if (seen_as || trail->count >= HUB_TREE_PAGES_MAX) {
        free(next);
        if (seen_as)
            return hub_fail(client, err, HUB_ERR_PROTOCOL, 0,
                            "the %s of %s does not end: page %zu links back to page %zu",
                            listing->noun, listing->subject, trail->count, seen_as);
        return hub_fail(client, err, HUB_ERR_PROTOCOL, 0, "the %s of %s does not end: more than %d pages",
                        listing->noun, listing->subject, HUB_TREE_PAGES_MAX);
    }
    if (!trail_add(trail, next, hash))
        return hub_fail(client, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
    return HUB_OK;
}

/* Reads the listing from first_url (taken over) page after page, until the last page, a
 * failure, a limit of the builder, or max_pages. *more tells whether a next page was left. */
static hub_status read_pages(hub_client *client, char *first_url, const hub_call *call,
                             const paged_listing *listing, size_t max_pages, bool *more, hub_error *err)
{
    page_trail trail = {0};
    *more = false;
    hub_status status = follow_page(client, &trail, first_url, listing, err);
    while (status == HUB_OK) {
        char *next = NULL;
        status = fetch_listing_page(client, trail.urls[trail.count - 1], call, listing, &next, err);
        *more = next != NULL;
        if (status != HUB_OK || !next || listing->is_cut(listing->builder) || trail.count >= max_pages) {
            free(next);
            break;
        }
        status = follow_page(client, &trail, next, listing, err);
    }
    trail_free(&trail);
    return status;
}

static hub_status parse_tree_page(const char *body, size_t len, void *builder, char *why, size_t why_cap)
{
    return hub_parse_tree_page(body, len, builder, why, why_cap);
}

static bool tree_is_cut(const void *builder)
{
    return ((const hub_tree_builder *)builder)->tree->truncated[0] != '\0';
}

hub_status hub_list_tree(hub_client *client, const hub_repo *repo, const char *commit,
                         hub_tree *out, hub_error *err)
{
    hub_error_clear(err);
    memset(out, 0, sizeof *out);
    hub_status status = hub_check_repo(client, repo, err);
    if (status != HUB_OK)
        return status;
    if (!commit || !*commit || strlen(commit) > 256)
        return hub_fail(client, err, HUB_ERR_INVALID_ARGUMENT, 0, "a commit to list is needed");
    if (client->cfg.offline)
        return hub_fail_offline(client, err);
    char *encoded = hub_url_encode(commit, false);
    char *url = NULL;
    if (!encoded || asprintf(&url, "%s/api/%s/%s/tree/%s?recursive=true&expand=false",
                             client->cfg.endpoint, hub_repo_api_kind(repo->type), repo->id,
                             encoded) < 0) {
        free(encoded);
        return hub_fail(client, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
    }
    free(encoded);
    hub_call call = {.repo = repo, .revision = commit, .what = "listing the files of"};
    hub_tree_builder builder = {.tree = out, .max_entries = HUB_TREE_ENTRIES_MAX,
                                .max_path_bytes = HUB_TREE_PATH_BYTES_MAX};
    paged_listing listing = {.noun = "tree listing", .subject = repo->id, .parse_page = parse_tree_page,
                             .builder = &builder, .is_cut = tree_is_cut};
    bool more;
    status = read_pages(client, url, &call, &listing, SIZE_MAX, &more, err);   /* follow_page caps it */
    if (status != HUB_OK)
        hub_tree_free(out);
    return status;
}

static hub_status parse_repo_list_page(const char *body, size_t len, void *builder, char *why,
                                       size_t why_cap)
{
    return hub_parse_repo_list_page(body, len, builder, why, why_cap);
}

static bool repo_list_is_cut(const void *builder)
{
    return ((const hub_repo_list_builder *)builder)->cut;
}

hub_status hub_list_repos(hub_client *client, hub_repo_type type, const char *author, size_t max_names,
                          size_t max_pages, hub_repo_list *out, hub_error *err)
{
    hub_error_clear(err);
    memset(out, 0, sizeof *out);
    hub_repo as_repo = {.type = type, .id = author};   /* an author's name is checked as an id */
    hub_status status = hub_check_repo(client, &as_repo, err);
    if (status == HUB_OK && strchr(author, '/'))
        status = hub_fail(client, err, HUB_ERR_INVALID_ARGUMENT, 0, "\"%.200s\" is not an author name", author);
    if (status != HUB_OK)
        return status;
    if (client->cfg.offline)
        return hub_fail_offline(client, err);
    char *url = NULL;
    if (asprintf(&url, "%s/api/%s?author=%s", client->cfg.endpoint, hub_repo_api_kind(type), author) < 0)
        return hub_fail(client, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
    hub_call call = {.repo = &as_repo, .what = "listing the repos of"};
    hub_repo_list_builder builder = {.list = out, .author = author, .max_names = max_names};
    paged_listing listing = {.noun = "repo listing", .subject = author, .parse_page = parse_repo_list_page,
                             .builder = &builder, .is_cut = repo_list_is_cut};
    bool more;
    status = read_pages(client, url, &call, &listing, max_pages ? max_pages : 1, &more, err);
    out->complete = status == HUB_OK && !more && !builder.cut;
    if (status != HUB_OK)
        hub_repo_list_free(out);
    return status;
}

void hub_tree_free(hub_tree *tree)
{
    if (!tree)
        return;
    for (size_t i = 0; i < tree->count; i++)
        free(tree->entries[i].path);
    free(tree->entries);
    memset(tree, 0, sizeof *tree);
}
