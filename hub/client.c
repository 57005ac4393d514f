/* client.c — the client's life cycle, revisions, tree listing and counters. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define TREE_PAGES_MAX 100000   /* a server that keeps paging past this is broken */

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
    if (cfg->connect_timeout_ms <= 0 || cfg->stall_timeout_ms <= 0 || cfg->max_retries < 0 ||
        cfg->backoff_initial_ms <= 0 || cfg->backoff_max_ms < cfg->backoff_initial_ms ||
        cfg->max_connections <= 0)
        return hub_fail(NULL, err, HUB_ERR_INVALID_ARGUMENT, 0,
                        "invalid Hub client configuration: timeouts, backoff and connections must "
                        "be positive and retries not negative");
    return HUB_OK;
}

static hub_status copy_config(hub_client *client, const hub_config *cfg, hub_error *err)
{
    client->cfg = *cfg;
    client->cfg.endpoint = strdup(cfg->endpoint);
    client->cfg.token = cfg->token && *cfg->token ? strdup(cfg->token) : NULL;
    size_t len = client->cfg.endpoint ? strlen(client->cfg.endpoint) : 0;
    while (len > 0 && client->cfg.endpoint[len - 1] == '/')
        client->cfg.endpoint[--len] = '\0';
    if (!client->cfg.endpoint || (cfg->token && *cfg->token && !client->cfg.token))
        return hub_fail(NULL, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
    hub_url_origin(client->cfg.endpoint, &client->endpoint_origin);
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
        memset(authorization, 0, strlen(authorization));
        free(authorization);
        if (!grown)
            return hub_fail(NULL, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
        client->headers_with_token = grown;
    }
    return HUB_OK;
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
    curl_slist_free_all(client->headers_with_token);
    free(client->user_agent);
    hub_config_clear(&client->cfg);
    free(client);
}

void hub_get_counters(hub_client *client, hub_counters *out)
{
    out->requests = atomic_load(&client->requests);
    out->bytes_received = atomic_load(&client->bytes_received);
    out->retries = atomic_load(&client->retries);
    out->resolves = atomic_load(&client->resolves);
    out->in_flight = atomic_load(&client->in_flight);
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
        hub_origin origin;
        if (!next || !hub_url_origin(next, &origin) ||
            !hub_same_origin(&origin, &client->endpoint_origin) || redirects >= HUB_REDIRECTS_MAX)
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

hub_status hub_resolve_revision(hub_client *client, const hub_repo *repo, const char *revision,
                                char commit_out[HUB_SHA_HEX_LEN + 1], hub_error *err)
{
    hub_error_clear(err);
    hub_status status = hub_check_repo(client, repo, err);
    if (status != HUB_OK)
        return status;
    if (!revision || !*revision || strlen(revision) > 256)
        return hub_fail(client, err, HUB_ERR_INVALID_ARGUMENT, 0,
                        "a revision (branch, tag or commit) of 1 to 256 bytes is needed");
    if (client->cfg.offline && hub_is_hex(revision, HUB_SHA_HEX_LEN)) {
        /* offline, a commit is taken on trust: only the cache can serve it anyway */
        for (int i = 0; i <= HUB_SHA_HEX_LEN; i++)
            commit_out[i] = (char)tolower((unsigned char)revision[i]);
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
    else if (status == HUB_OK && !hub_parse_repo_info_sha(t.body, t.body_len, commit_out))
        status = hub_fail(client, err, HUB_ERR_PROTOCOL, t.status,
                          "the Hub's answer about %s revision \"%s\" has no valid 40-hex \"sha\"",
                          repo->id, revision);
    hub_transfer_destroy(&t);
    free(url);
    return status;
}

/* Fetches one page into tree; *next_url gets the next page's URL or NULL. */
static hub_status list_tree_page(hub_client *client, const char *url, const hub_call *call,
                                 hub_tree *tree, size_t *capacity, char **next_url, hub_error *err)
{
    *next_url = NULL;
    hub_transfer t;
    hub_transfer_init(&t);
    hub_status status = api_get(client, url, call, &t, err);
    if (status == HUB_OK && t.status != 200)
        status = hub_error_from_answer(client, &t, call, err);
    if (status == HUB_OK) {
        char why[256];
        status = hub_parse_tree_page(t.body, t.body_len, tree, capacity, HUB_TREE_ENTRIES_MAX, why,
                                     sizeof why);
        if (status != HUB_OK)
            hub_fail(client, err, status, t.status, "bad tree listing of %s at %s: %s",
                     call->repo->id, call->revision, why);
    }
    hub_origin origin;
    if (status == HUB_OK && hub_parse_link_next(t.headers[HUB_HDR_LINK], next_url) &&
        (!hub_url_origin(*next_url, &origin) || !hub_same_origin(&origin, &client->endpoint_origin))) {
        free(*next_url);
        *next_url = NULL;
        status = hub_fail(client, err, HUB_ERR_PROTOCOL, t.status,
                          "the tree listing of %s points its next page outside %s: refused",
                          call->repo->id, client->cfg.endpoint);
    }
    hub_transfer_destroy(&t);
    return status;
}

hub_status hub_list_tree(hub_client *client, const hub_repo *repo, const char *commit,
                         hub_tree *out, hub_error *err)
{
    hub_error_clear(err);
    out->entries = NULL;
    out->count = 0;
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
    size_t capacity = 0;
    for (int pages = 0; url && status == HUB_OK; pages++) {
        char *next = NULL;
        status = list_tree_page(client, url, &call, out, &capacity, &next, err);
        if (status == HUB_OK && next && (strcmp(next, url) == 0 || pages + 1 >= TREE_PAGES_MAX))
            status = hub_fail(client, err, HUB_ERR_PROTOCOL, 0,
                              "the tree listing of %s does not end (page %d links to itself or "
                              "too many pages)",
                              repo->id, pages + 1);
        free(url);
        url = next;
    }
    free(url);
    if (status != HUB_OK)
        hub_tree_free(out);
    return status;
}

void hub_tree_free(hub_tree *tree)
{
    if (!tree)
        return;
    for (size_t i = 0; i < tree->count; i++)
        free(tree->entries[i].path);
    free(tree->entries);
    tree->entries = NULL;
    tree->count = 0;
}
