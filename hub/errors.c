/* errors.c — status names and error messages (the token is scrubbed from every message). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

const char *hub_status_name(hub_status status)
{
    switch (status) {
    case HUB_OK: return "ok";
    case HUB_ERR_INVALID_ARGUMENT: return "invalid-argument";
    case HUB_ERR_UNAUTHORIZED: return "unauthorized";
    case HUB_ERR_GATED: return "gated";
    case HUB_ERR_DISABLED: return "disabled";
    case HUB_ERR_REPO_NOT_FOUND: return "repo-not-found";
    case HUB_ERR_REVISION_NOT_FOUND: return "revision-not-found";
    case HUB_ERR_ENTRY_NOT_FOUND: return "entry-not-found";
    case HUB_ERR_RANGE_NOT_SATISFIABLE: return "range-not-satisfiable";
    case HUB_ERR_RATE_LIMITED: return "rate-limited";
    case HUB_ERR_SERVER: return "server";
    case HUB_ERR_NETWORK: return "network";
    case HUB_ERR_PROTOCOL: return "protocol";
    case HUB_ERR_OFFLINE: return "offline";
    case HUB_ERR_NO_MEMORY: return "no-memory";
    case HUB_ERR_CANCELLED: return "cancelled";
    }
    return "unknown";
}

void hub_error_clear(hub_error *err)
{
    if (err) {
        err->status = HUB_OK;
        err->http_status = 0;
        err->message[0] = '\0';
    }
}

/* Copies message into out (out_cap bytes) with every occurrence of token replaced by "***".
 * Runs on the untruncated text so that no prefix of the token survives a cut. */
static void copy_scrubbed(char *out, size_t out_cap, const char *message, const char *token)
{
    size_t token_len = token ? strlen(token) : 0;
    size_t n = 0;
    for (const char *p = message; *p && n + 1 < out_cap;) {
        if (token_len && strncmp(p, token, token_len) == 0) {
            for (const char *mask = "***"; *mask && n + 1 < out_cap; mask++)
                out[n++] = *mask;
            p += token_len;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
}

hub_status hub_fail(const hub_client *client, hub_error *err, hub_status status, long http_status,
                    const char *fmt, ...)
{
    if (!err)
        return status;
    char full[4096];
    va_list args;
    va_start(args, fmt);
    vsnprintf(full, sizeof full, fmt, args);
    va_end(args);
    err->status = status;
    err->http_status = http_status;
    copy_scrubbed(err->message, sizeof err->message, full, client ? client->cfg.token : NULL);
    return status;
}

hub_status hub_fail_offline(const hub_client *client, hub_error *err)
{
    return hub_fail(client, err, HUB_ERR_OFFLINE, 0,
                    "HF_HUB_OFFLINE=1 forbids network access: unset it to reach %s",
                    client->cfg.endpoint);
}

hub_status hub_fail_cancelled(const hub_client *client, hub_error *err)
{
    return hub_fail(client, err, HUB_ERR_CANCELLED, 0,
                    "the request was cancelled: the filesystem is shutting down");
}

const char *hub_repo_url_prefix(hub_repo_type type)
{
    switch (type) {
    case HUB_REPO_DATASET: return "datasets/";
    case HUB_REPO_SPACE: return "spaces/";
    case HUB_REPO_MODEL: break;
    }
    return "";
}

const char *hub_repo_api_kind(hub_repo_type type)
{
    switch (type) {
    case HUB_REPO_DATASET: return "datasets";
    case HUB_REPO_SPACE: return "spaces";
    case HUB_REPO_MODEL: break;
    }
    return "models";
}

hub_status hub_check_repo(const hub_client *client, const hub_repo *repo, hub_error *err)
{
    if (!repo || !repo->id)
        return hub_fail(client, err, HUB_ERR_INVALID_ARGUMENT, 0, "no repository given");
    if (repo->type != HUB_REPO_MODEL && repo->type != HUB_REPO_DATASET &&
        repo->type != HUB_REPO_SPACE)
        return hub_fail(client, err, HUB_ERR_INVALID_ARGUMENT, 0, "unknown repository type %d",
                        (int)repo->type);
    if (!hub_repo_id_is_valid(repo->id))
        return hub_fail(client, err, HUB_ERR_INVALID_ARGUMENT, 0,
                        "\"%.200s\" is not a repository id: expected org/name", repo->id);
    return HUB_OK;
}
