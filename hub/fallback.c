/* fallback.c — the endpoint's health, and the fallback endpoint that requests move to while it
 * is down: a site's cache as endpoint, the Hub itself as fallback. The rule is in hub.h
 * (hub_config.fallback_endpoint); requests to other origins (the CDN) are left as they are. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define MESSAGE_MAX 1024

static int64_t monotonic_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

bool hub_url_is_hub(const hub_client *client, const char *url)
{
    hub_origin origin;
    if (!url || !hub_url_origin(url, &origin))
        return false;
    return hub_same_origin(&origin, &client->endpoint_origin) ||
           (client->cfg.fallback_endpoint && hub_same_origin(&origin, &client->fallback_origin));
}

/* What follows the endpoint in url ("/api/...", "" or "?..."), or NULL when url is not on it. */
static const char *past_endpoint(const hub_client *client, const char *url)
{
    size_t length = strlen(client->cfg.endpoint);
    if (strncmp(url, client->cfg.endpoint, length) != 0)
        return NULL;
    char next = url[length];
    return next == '\0' || next == '/' || next == '?' ? url + length : NULL;
}

static void notify(const hub_client *client, hub_endpoint_event event, const char *message)
{
    if (client->cfg.on_endpoint_event)
        client->cfg.on_endpoint_event(client->cfg.on_endpoint_event_arg, event, message);
}

static bool endpoint_held_down(const hub_client *client)
{
    return client->cfg.fallback_endpoint &&
           monotonic_ms() < atomic_load(&client->endpoint_down_until_ms);
}

bool hub_route_attempt(hub_client *client, hub_route *route, hub_transfer *t)
{
    const char *rest = past_endpoint(client, route->asked_url);
    t->url = route->asked_url;
    if (!rest || !endpoint_held_down(client))
        return true;
    if (!route->fallback_url &&
        asprintf(&route->fallback_url, "%s%s", client->cfg.fallback_endpoint, rest) < 0) {
        route->fallback_url = NULL;
        return false;
    }
    t->url = route->fallback_url;
    atomic_fetch_add_explicit(&client->fallback_requests, 1, memory_order_relaxed);
    notify(client, HUB_FALLBACK_REQUEST, NULL);
    return true;
}

/* A failure that says the endpoint itself is unwell, not the Hub behind it: nothing came back
 * (network error, stall, trickle, a body cut short) or a proxy's 502/503/504. */
static bool failure_means_down(const hub_transfer *t)
{
    if (t->curl_code != CURLE_OK || t->stalled || t->too_slow)
        return true;
    return t->status == 502 || t->status == 503 || t->status == 504 ||
           (t->status >= 200 && t->status < 300);   /* a 2xx retried: its body broke off */
}

static void describe_failure(const hub_transfer *t, char *out, size_t out_cap)
{
    if (t->stalled || t->too_slow)
        snprintf(out, out_cap, "%s", t->stalled ? "it stalled" : "it trickled");
    else if (t->curl_code != CURLE_OK)
        snprintf(out, out_cap, "%s", t->curl_message[0] ? t->curl_message : curl_easy_strerror(t->curl_code));
    else if (t->status >= 200 && t->status < 300)
        snprintf(out, out_cap, "an answer broke off");
    else
        snprintf(out, out_cap, "HTTP %ld", t->status);
}

static void mark_down(hub_client *client, const hub_transfer *t)
{
    atomic_store(&client->endpoint_down_until_ms, monotonic_ms() + HUB_ENDPOINT_DOWN_HOLD_MS);
    if (atomic_exchange(&client->endpoint_down, true))
        return;                           /* said once per outage */
    char why[CURL_ERROR_SIZE + 32];
    describe_failure(t, why, sizeof why);
    char message[MESSAGE_MAX];
    if (client->cfg.fallback_endpoint)
        snprintf(message, sizeof message,
                 "the Hub endpoint %.200s is failing (%.200s): requests go to the fallback %.200s, "
                 "and back to the endpoint once it answers (tried every %ld s)",
                 client->cfg.endpoint, why, client->cfg.fallback_endpoint,
                 HUB_ENDPOINT_DOWN_HOLD_MS / 1000);
    else
        snprintf(message, sizeof message,
                 "the Hub endpoint %.200s is failing (%.200s): reads fail until it answers again "
                 "(--fallback-endpoint URL sends them to the Hub meanwhile)",
                 client->cfg.endpoint, why);
    notify(client, HUB_ENDPOINT_DOWN, message);
}

static void mark_up(hub_client *client)
{
    if (!atomic_load(&client->endpoint_down) || !atomic_exchange(&client->endpoint_down, false))
        return;
    atomic_store(&client->endpoint_down_until_ms, 0);
    char message[MESSAGE_MAX];
    snprintf(message, sizeof message, "the Hub endpoint %.200s answers again: requests go to it",
             client->cfg.endpoint);
    notify(client, HUB_ENDPOINT_BACK, message);
}

bool hub_route_outcome(hub_client *client, hub_route *route, const hub_transfer *t, bool answered,
                       bool retryable)
{
    if (t->url != route->asked_url || !past_endpoint(client, route->asked_url) || t->cancelled)
        return false;                     /* the fallback's and other origins' health: not ours */
    if (answered || (retryable && !failure_means_down(t))) {
        route->endpoint_failures = 0;
        mark_up(client);                  /* it answered, whatever it said */
        return false;
    }
    if (!retryable)
        return false;                     /* a local or certificate problem: no verdict */
    int failures_for_down = client->cfg.max_retries > 0 ? 2 : 1;
    if (++route->endpoint_failures < failures_for_down)
        return false;
    mark_down(client, t);
    bool move = client->cfg.fallback_endpoint && !route->moved;
    route->moved = route->moved || move;
    return move;
}

void hub_route_end(hub_route *route, hub_transfer *t)
{
    t->url = route->asked_url;
    free(route->fallback_url);
    route->fallback_url = NULL;
}
