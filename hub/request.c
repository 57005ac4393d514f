/* request.c — one logical request: attempts with backoff in the calling thread, and the
 * translation of the Hub's error answers into statuses and actionable messages. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "internal.h"

typedef enum attempt_outcome {
    ATTEMPT_ANSWERED,      /* a final HTTP answer: the caller interprets its status */
    ATTEMPT_RETRYABLE,     /* 408/429/5xx, network error, truncated body */
    ATTEMPT_FATAL,         /* an answer we refused (protocol) or a local failure */
} attempt_outcome;

static bool status_is_retryable(long status)
{
    return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 ||
           status == 504;
}

static bool curl_code_is_retryable(CURLcode code)
{
    switch (code) {
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_OUT_OF_MEMORY:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_ABORTED_BY_CALLBACK:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_NOT_BUILT_IN:
    case CURLE_UNKNOWN_OPTION:
    case CURLE_WRITE_ERROR:
        return false;
    default:
        return true;
    }
}

static bool body_truncated(const hub_transfer *t)
{
    return t->sink == HUB_SINK_RANGE && t->status >= 200 && t->status < 300 &&
           t->range_received < t->range_len;
}

static attempt_outcome classify(const hub_transfer *t)
{
    if (t->sink_problem || t->cancelled)
        return ATTEMPT_FATAL;
    if (t->sink == HUB_SINK_RANGE && t->range_len && t->range_received == t->range_len)
        return ATTEMPT_ANSWERED;          /* every byte in place, whatever broke after them */
    if (t->stalled || t->too_slow)
        return ATTEMPT_RETRYABLE;
    if (t->curl_code != CURLE_OK)
        return curl_code_is_retryable(t->curl_code) ? ATTEMPT_RETRYABLE : ATTEMPT_FATAL;
    if (status_is_retryable(t->status) || body_truncated(t))
        return ATTEMPT_RETRYABLE;
    return ATTEMPT_ANSWERED;
}

/* How long to wait before the next attempt: what the server asked (Retry-After in seconds or
 * as a date, RateLimit), else exponential backoff (also when the date asked for has passed). */
static long retry_wait_ms(const hub_config *cfg, const hub_transfer *t, int attempt)
{
    long asked = hub_parse_retry_after_s(t->headers[HUB_HDR_RETRY_AFTER], time(NULL));
    long reset = hub_parse_ratelimit_reset_s(t->headers[HUB_HDR_RATELIMIT]);
    if (reset > asked)
        asked = reset;
    if (asked > 0)
        return asked * 1000 > HUB_RETRY_WAIT_MAX_MS ? HUB_RETRY_WAIT_MAX_MS : asked * 1000;
    long wait = cfg->backoff_initial_ms;
    for (int i = 0; i < attempt && wait < cfg->backoff_max_ms; i++)
        wait *= 2;
    return wait > cfg->backoff_max_ms ? cfg->backoff_max_ms : wait;
}

/* Waits ms, or less when the client is cancelled meanwhile. */
static void wait_before_retry(hub_client *client, long ms)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += ms / 1000;
    deadline.tv_nsec += (ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&client->cancel_mutex);
    while (!atomic_load(&client->cancelled) &&
           pthread_cond_timedwait(&client->cancel_cond, &client->cancel_mutex, &deadline) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&client->cancel_mutex);
}

static const char *url_host(const char *url, hub_origin *origin)
{
    return hub_url_origin(url, origin) ? origin->host : "the server";
}

static bool curl_code_is_certificate_problem(CURLcode code)
{
    return code == CURLE_PEER_FAILED_VERIFICATION || code == CURLE_SSL_CACERT_BADFILE ||
           code == CURLE_SSL_ISSUER_ERROR;
}

/* A certificate that was refused, or CAs that could not be loaded: say which CAs were used
 * and how to give the right ones (never "turn verification off"). */
static hub_status fail_certificate(hub_client *client, const hub_transfer *t, const char *host,
                                   const hub_call *call, hub_error *err)
{
    const hub_config *cfg = &client->cfg;
    char trusted[200];
    if (cfg->ca_bundle)
        snprintf(trusted, sizeof trusted, "the CA bundle %.120s from %s", cfg->ca_bundle,
                 cfg->ca_bundle_origin ? cfg->ca_bundle_origin : "the configuration");
    else
        snprintf(trusted, sizeof trusted, "the system's CA store");
    const char *how = "give the CA certificate(s) as a PEM file with --ca-bundle FILE or in "
                      "CURL_CA_BUNDLE, REQUESTS_CA_BUNDLE or SSL_CERT_FILE";
    if (t->curl_code == CURLE_SSL_CACERT_BADFILE)
        return hub_fail(client, err, HUB_ERR_NETWORK, 0, "cannot load %s while %s (%s): %s",
                        trusted, call->what, t->curl_message, how);
    if (strstr(t->curl_message, "subject name"))   /* a trusted certificate, for other names */
        return hub_fail(client, err, HUB_ERR_NETWORK, 0,
                        "the TLS certificate of %s is for another host name while %s (%s): reach "
                        "the server by a name its certificate holds (check HF_ENDPOINT)",
                        host, call->what, t->curl_message);
    return hub_fail(client, err, HUB_ERR_NETWORK, 0,
                    "the TLS certificate of %s was refused while %s (%s; checked against %s): if "
                    "it comes from a private CA, %s",
                    host, call->what, t->curl_message, trusted, how);
}

/* The error for an attempt that cannot be retried any more. */
static hub_status fail_attempt(hub_client *client, const hub_transfer *t, const hub_call *call,
                               int attempts, hub_error *err)
{
    hub_origin origin;
    const char *host = url_host(t->url, &origin);
    if (t->cancelled)
        return hub_fail_cancelled(client, err);
    if (t->sink_problem)
        return hub_fail(client, err, HUB_ERR_PROTOCOL, t->status, "%s from %s while %s %s: %s",
                        t->sink == HUB_SINK_GROW ? "unusable answer" : "unusable range answer",
                        host, call->what, call->path ? call->path : call->repo->id,
                        t->sink_problem);
    if (t->stalled)
        return hub_fail(client, err, HUB_ERR_NETWORK, t->status,
                        "%s sent nothing for %ld ms while %s, %d time%s: the connection stalls "
                        "(HF_HUB_DOWNLOAD_TIMEOUT sets this limit)",
                        host, client->cfg.stall_timeout_ms, call->what, attempts,
                        attempts == 1 ? "" : "s");
    if (t->too_slow)
        return hub_fail(client, err, HUB_ERR_NETWORK, t->status,
                        "%s sent less than %ld bytes/s while %s, %d time%s: the connection "
                        "trickles (after the HF_HUB_DOWNLOAD_TIMEOUT grace period)",
                        host, client->cfg.min_rate_bytes_per_s, call->what, attempts,
                        attempts == 1 ? "" : "s");
    if (t->curl_code == CURLE_OUT_OF_MEMORY)
        return hub_fail(client, err, HUB_ERR_NO_MEMORY, 0, "out of memory while %s", call->what);
    if (curl_code_is_certificate_problem(t->curl_code))
        return fail_certificate(client, t, host, call, err);
    if (t->curl_code != CURLE_OK)
        return hub_fail(client, err, HUB_ERR_NETWORK, 0,
                        "network error talking to %s while %s (%s) after %d attempt%s: check the "
                        "connection and HF_ENDPOINT; HF_HUB_ETAG_TIMEOUT and "
                        "HF_HUB_DOWNLOAD_TIMEOUT set the connect and stall timeouts",
                        host, call->what, t->curl_message, attempts, attempts == 1 ? "" : "s");
    if (body_truncated(t))
        return hub_fail(client, err, HUB_ERR_NETWORK, t->status,
                        "%s sent %zu of %zu bytes while %s, %d times: the connection keeps breaking",
                        host, t->range_received, t->range_len, call->what, attempts);
    if (t->status == 429)
        return hub_fail(client, err, HUB_ERR_RATE_LIMITED, 429,
                        "rate limited by %s while %s (HTTP 429, %d attempts): wait and retry, or "
                        "set HF_TOKEN for a higher limit",
                        host, call->what, attempts);
    return hub_fail(client, err, HUB_ERR_SERVER, t->status,
                    "%s answered HTTP %ld while %s, %d times: the server is failing, try again later",
                    host, t->status, call->what, attempts);
}

static hub_status run_attempts(hub_client *client, hub_route *route, hub_transfer *t,
                               const hub_call *call, hub_error *err)
{
    int max_attempts = client->cfg.max_retries + 1;
    for (int attempt = 0;; attempt++) {
        if (!hub_route_attempt(client, route, t))
            return hub_fail(client, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
        hub_transfer_reset_answer(t);
        hub_loop_run(client, t);
        attempt_outcome outcome = classify(t);
        if (hub_route_outcome(client, route, t, outcome == ATTEMPT_ANSWERED,
                              outcome == ATTEMPT_RETRYABLE)) {
            attempt = -1;                 /* on to the fallback, at once, with a full budget */
            continue;
        }
        if (outcome == ATTEMPT_ANSWERED)
            return HUB_OK;
        if (outcome == ATTEMPT_FATAL || attempt + 1 >= max_attempts)
            return fail_attempt(client, t, call, attempt + 1, err);
        atomic_fetch_add_explicit(&client->retries, 1, memory_order_relaxed);
        wait_before_retry(client, retry_wait_ms(&client->cfg, t, attempt));
        if (atomic_load(&client->cancelled))
            return hub_fail_cancelled(client, err);
    }
}

hub_status hub_request(hub_client *client, hub_transfer *t, const hub_call *call, hub_error *err)
{
    if (client->cfg.offline)
        return hub_fail_offline(client, err);
    if (atomic_load(&client->cancelled))
        return hub_fail_cancelled(client, err);
    hub_route route = {.asked_url = t->url};
    hub_status status = run_attempts(client, &route, t, call, err);
    hub_route_end(&route, t);
    return status;
}

/* The Hub's own words about the error: X-Error-Message, else the JSON body's "error". */
static void server_message(const hub_transfer *t, char *out, size_t out_cap)
{
    out[0] = '\0';
    const char *header = t->headers[HUB_HDR_X_ERROR_MESSAGE];
    if (header) {
        size_t n = 0;
        for (const char *p = header; *p && n + 1 < out_cap; p++)
            out[n++] = (*p >= 0x20 && *p < 0x7f) ? *p : ' ';
        out[n] = '\0';
        return;
    }
    if (t->body_len)
        hub_parse_error_body(t->body, t->body_len, out, out_cap);
}

static bool error_code_is(const hub_transfer *t, const char *code)
{
    const char *value = t->headers[HUB_HDR_X_ERROR_CODE];
    return value && strcasecmp(value, code) == 0;
}

static hub_status fail_repo_not_found(hub_client *client, const hub_transfer *t,
                                      const hub_call *call, hub_error *err)
{
    /* The Hub answers a private repo exactly as a missing one (huggingface_hub raises
     * RepositoryNotFoundError for both): the message names both possibilities. */
    return hub_fail(client, err, HUB_ERR_REPO_NOT_FOUND, t->status,
                    "repository %s%s not found, or private%s",
                    hub_repo_url_prefix(call->repo->type), call->repo->id,
                    t->send_token ? " and not readable with this token: check the name, and that "
                                    "the token's account can read the repo"
                                  : ": set HF_TOKEN to a token that can read it, or check the name");
}

static hub_status fail_unauthorized(hub_client *client, const hub_transfer *t,
                                    const hub_call *call, const char *said, hub_error *err)
{
    if (t->send_token)
        return hub_fail(client, err, HUB_ERR_UNAUTHORIZED, t->status,
                        "the token was refused: check HF_TOKEN (HTTP %ld while %s %s%s%s)",
                        t->status, call->what, call->repo->id, said[0] ? ": " : "", said);
    return hub_fail(client, err, HUB_ERR_UNAUTHORIZED, t->status,
                    "%s needs authentication: set HF_TOKEN (HTTP %ld%s%s)", call->repo->id,
                    t->status, said[0] ? ": " : "", said);
}

hub_status hub_error_from_answer(hub_client *client, const hub_transfer *t, const hub_call *call,
                                 hub_error *err)
{
    char said[200];
    server_message(t, said, sizeof said);
    const hub_repo *repo = call->repo;
    long status = t->status;
    const char *prefix = hub_repo_url_prefix(repo->type);

    if (error_code_is(t, "GatedRepo"))
        return hub_fail(client, err, HUB_ERR_GATED, status,
                        "gated repo: accept the terms at %s/%s%s and set HF_TOKEN to a token of an "
                        "account that did",
                        client->cfg.endpoint, prefix, repo->id);
    if (status == 401 && t->send_token && strcasestr(said, "invalid credentials"))
        return fail_unauthorized(client, t, call, said, err);
    if (error_code_is(t, "RepoNotFound"))
        return fail_repo_not_found(client, t, call, err);
    if (error_code_is(t, "RevisionNotFound"))
        return hub_fail(client, err, HUB_ERR_REVISION_NOT_FOUND, status,
                        "revision \"%s\" not found in repository %s%s: check the branch, tag or "
                        "commit name",
                        call->revision ? call->revision : "?", prefix, repo->id);
    if (error_code_is(t, "EntryNotFound") || (status == 404 && call->path))
        return hub_fail(client, err, HUB_ERR_ENTRY_NOT_FOUND, status,
                        "%s not found in repository %s%s at revision %s",
                        call->path ? call->path : "the path", prefix, repo->id,
                        call->revision ? call->revision : "?");
    if (status == 403 && strcasestr(said, "disabled"))
        return hub_fail(client, err, HUB_ERR_DISABLED, status,
                        "repository %s%s is disabled by the Hub (%s): nothing can be read from it",
                        prefix, repo->id, said);
    if (status == 401 && t->send_token)
        return fail_unauthorized(client, t, call, said, err);
    if (status == 401 || status == 404)
        return fail_repo_not_found(client, t, call, err);
    if (status == 403)
        return hub_fail(client, err, HUB_ERR_UNAUTHORIZED, status,
                        "access to %s%s refused (HTTP 403%s%s): %s", prefix, repo->id,
                        said[0] ? ": " : "", said,
                        t->send_token ? "check that the account of HF_TOKEN may read it"
                                      : "set HF_TOKEN");
    if (status == 416)
        return hub_fail(client, err, HUB_ERR_RANGE_NOT_SATISFIABLE, status,
                        "the range asked of %s is past its end", call->path ? call->path : repo->id);
    if (status == 429)
        return hub_fail(client, err, HUB_ERR_RATE_LIMITED, status,
                        "rate limited by the Hub: wait and retry, or set HF_TOKEN for a higher limit");
    if (status >= 500)
        return hub_fail(client, err, HUB_ERR_SERVER, status,
                        "the Hub answered HTTP %ld while %s%s%s: try again later", status,
                        call->what, said[0] ? ": " : "", said);
    if (status == 400)
        return hub_fail(client, err, HUB_ERR_INVALID_ARGUMENT, status,
                        "the Hub refused the request while %s %s (HTTP 400%s%s)", call->what,
                        repo->id, said[0] ? ": " : "", said);
    return hub_fail(client, err, HUB_ERR_PROTOCOL, status,
                    "unexpected HTTP %ld from the Hub while %s %s%s%s", status, call->what,
                    repo->id, said[0] ? ": " : "", said);
}
