/* http.c — the event loop: one thread owns the curl multi handle and every easy handle.
 *
 * Callers queue a hub_transfer and wait on the transfer's own condition variable; the loop
 * thread creates the easy handle, runs it with all others, and signals the caller when the
 * answer is complete. Nothing here sleeps or retries (that happens in the calling thread),
 * and the loop holds no caller's lock while it waits on the network.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "internal.h"

#define HEADER_VALUE_MAX 65536        /* longer header values are dropped */
#define CURL_BUFFER_BYTES (512 * 1024) /* fewer, larger writes into the caller's buffer */
#define POLL_TIMEOUT_MS 1000

static const char *const header_names[HUB_HDR_COUNT] = {
    [HUB_HDR_LOCATION] = "Location",
    [HUB_HDR_X_REPO_COMMIT] = "X-Repo-Commit",
    [HUB_HDR_X_LINKED_ETAG] = "X-Linked-Etag",
    [HUB_HDR_X_LINKED_SIZE] = "X-Linked-Size",
    [HUB_HDR_ETAG] = "ETag",
    [HUB_HDR_CONTENT_LENGTH] = "Content-Length",
    [HUB_HDR_CONTENT_RANGE] = "Content-Range",
    [HUB_HDR_LINK] = "Link",
    [HUB_HDR_RETRY_AFTER] = "Retry-After",
    [HUB_HDR_RATELIMIT] = "RateLimit",
    [HUB_HDR_X_ERROR_CODE] = "X-Error-Code",
    [HUB_HDR_X_ERROR_MESSAGE] = "X-Error-Message",
};

void hub_transfer_init(hub_transfer *t)
{
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->mutex, NULL);
    pthread_cond_init(&t->done_cond, NULL);
}

static void clear_headers(hub_transfer *t)
{
    for (int i = 0; i < HUB_HDR_COUNT; i++) {
        free(t->headers[i]);
        t->headers[i] = NULL;
    }
}

void hub_transfer_reset_answer(hub_transfer *t)
{
    clear_headers(t);
    free(t->body);
    t->body = NULL;
    t->body_len = t->body_cap = 0;
    t->status = 0;
    t->curl_code = CURLE_OK;
    t->curl_message[0] = '\0';
    t->range_skip = 0;
    t->range_started = t->range_done = t->range_ignored = t->stalled = false;
    t->too_slow = t->cancelled = false;
    t->sink_problem = NULL;
    t->done = false;
}

void hub_transfer_destroy(hub_transfer *t)
{
    hub_transfer_reset_answer(t);
    pthread_mutex_destroy(&t->mutex);
    pthread_cond_destroy(&t->done_cond);
}

/* ---- callbacks (loop thread) ---- */

static void store_header(hub_transfer *t, hub_header_id id, const char *value, size_t len)
{
    char *old = t->headers[id];
    size_t old_len = old ? strlen(old) : 0;
    /* several Link headers are one list; for the others the last one wins */
    bool append = id == HUB_HDR_LINK && old;
    size_t total = append ? old_len + 2 + len : len;
    if (total > HEADER_VALUE_MAX)
        return;
    char *value_copy = malloc(total + 1);
    if (!value_copy)
        return;
    if (append) {
        memcpy(value_copy, old, old_len);
        memcpy(value_copy + old_len, ", ", 2);
    }
    memcpy(value_copy + (append ? old_len + 2 : 0), value, len);
    value_copy[total] = '\0';
    free(old);
    t->headers[id] = value_copy;
}

static size_t on_header(char *line, size_t size, size_t count, void *userdata)
{
    hub_transfer *t = userdata;
    size_t len = size * count;
    if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        clear_headers(t);                 /* a new answer (after a 1xx) starts over */
        return len;
    }
    const char *colon = memchr(line, ':', len);
    if (!colon)
        return len;
    size_t name_len = (size_t)(colon - line);
    const char *value = colon + 1;
    size_t value_len = len - name_len - 1;
    while (value_len > 0 && (*value == ' ' || *value == '\t')) {
        value++;
        value_len--;
    }
    while (value_len > 0 && (value[value_len - 1] == '\r' || value[value_len - 1] == '\n' ||
                             value[value_len - 1] == ' ' || value[value_len - 1] == '\t'))
        value_len--;
    if (memchr(value, '\0', value_len))
        return len;
    for (int id = 0; id < HUB_HDR_COUNT; id++) {
        if (strlen(header_names[id]) == name_len &&
            strncasecmp(line, header_names[id], name_len) == 0) {
            store_header(t, (hub_header_id)id, value, value_len);
            break;
        }
    }
    return len;
}

/* Appends to t->body up to limit bytes; false when the body would pass it. */
static bool append_body(hub_transfer *t, const char *data, size_t n, size_t limit)
{
    if (n > limit - t->body_len)
        return false;
    if (t->body_len + n + 1 > t->body_cap) {
        size_t cap = t->body_cap ? t->body_cap : 4096;
        while (cap < t->body_len + n + 1)
            cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
        char *grown = realloc(t->body, cap);
        if (!grown)
            return false;
        t->body = grown;
        t->body_cap = cap;
    }
    memcpy(t->body + t->body_len, data, n);
    t->body_len += n;
    t->body[t->body_len] = '\0';
    return true;
}

/* Decides, at the first body byte of a ranged GET, whether the answer can be used. */
static bool start_range(hub_transfer *t, long status)
{
    t->range_started = true;
    if (status == 200) {
        uint64_t length;
        if (t->file_size && hub_parse_uint64(t->headers[HUB_HDR_CONTENT_LENGTH], &length) &&
            length != t->file_size) {
            t->sink_problem = "a 200 answer to a ranged request is not the whole file";
            return false;
        }
        t->range_ignored = true;          /* the whole file: skip to the bytes still missing */
        t->range_skip = t->range_first + t->range_received;
        return true;
    }
    hub_content_range range;
    if (status != 206 || !hub_parse_content_range(t->headers[HUB_HDR_CONTENT_RANGE], &range) ||
        !range.satisfied || range.first != t->range_first + t->range_received ||
        range.last != t->range_first + t->range_len - 1 ||
        (t->file_size && range.size_known && range.size != t->file_size)) {
        t->sink_problem = status == 206 ? "the Content-Range of the answer does not match the request"
                                        : "unexpected success status to a ranged request";
        return false;
    }
    return true;
}

static size_t write_range(hub_transfer *t, const char *data, size_t n, long status)
{
    if (!t->range_started && !start_range(t, status))
        return 0;
    size_t offered = n;
    if (t->range_skip) {
        size_t skipped = t->range_skip < n ? (size_t)t->range_skip : n;
        t->range_skip -= skipped;
        data += skipped;
        n -= skipped;
    }
    size_t wanted = t->range_len - t->range_received;
    if (n > wanted && !t->range_ignored) {
        t->sink_problem = "the server sent more bytes than the range asked";
        return 0;
    }
    size_t taken = n < wanted ? n : wanted;
    memcpy(t->range_buf + t->range_received, data, taken);
    t->range_received += taken;
    if (t->range_received == t->range_len && t->range_ignored) {
        t->range_done = true;             /* the rest of the whole file is not needed */
        return taken == n ? offered : 0;
    }
    return offered;
}

static size_t on_body(char *data, size_t size, size_t count, void *userdata)
{
    hub_transfer *t = userdata;
    size_t n = size * count;
    atomic_fetch_add_explicit(&t->client->bytes_received, n, memory_order_relaxed);
    long status = 0;
    curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 300 || t->sink == HUB_SINK_NONE) {
        append_body(t, data, n, HUB_ERROR_BODY_MAX);   /* a truncated error text is fine */
        return n;
    }
    if (t->sink == HUB_SINK_GROW) {
        if (append_body(t, data, n, t->body_max))
            return n;
        t->sink_problem = "the answer is larger than allowed";
        return 0;
    }
    return write_range(t, data, n, status);
}

static int64_t monotonic_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Stall and trickle detection. CURLOPT_LOW_SPEED_* averages over several seconds, so a burst
 * followed by silence goes unnoticed for too long; this aborts once no byte moved for
 * stall_timeout_ms. A trickle (a few bytes now and then) is no better: once the grace period is
 * over, an attempt must average min_rate_bytes_per_s, or it is abandoned and retried. */
static int on_progress(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal;
    (void)ultotal;
    hub_transfer *t = userdata;
    const hub_config *cfg = &t->client->cfg;
    if (atomic_load_explicit(&t->client->cancelled, memory_order_relaxed)) {
        t->cancelled = true;
        return 1;
    }
    int64_t now = monotonic_ms();
    if (dlnow + ulnow != t->progress_bytes || t->progress_at_ms == 0) {
        t->progress_bytes = dlnow + ulnow;
        t->progress_at_ms = now;
    } else if (now - t->progress_at_ms >= cfg->stall_timeout_ms) {
        t->stalled = true;
        return 1;
    }
    /* Measured from the first byte: waiting for a connection (curl queues transfers past the
     * connection limit) or for the server's first byte is the stall rule's business. */
    if (dlnow > 0 && t->first_byte_at_ms == 0)
        t->first_byte_at_ms = now;
    int64_t elapsed_ms = t->first_byte_at_ms ? now - t->first_byte_at_ms : 0;
    bool body_expected = !t->head && !t->range_done;
    if (body_expected && cfg->min_rate_bytes_per_s > 0 && elapsed_ms > cfg->stall_timeout_ms &&
        (double)dlnow * 1000.0 / (double)elapsed_ms < (double)cfg->min_rate_bytes_per_s) {
        t->too_slow = true;
        return 1;
    }
    return 0;
}

/* ---- receive buffers ---- */

/* The loop thread drains one connection while data keeps coming, then the next. Autotuning
 * sizes a connection's window by what the reader takes per round trip, and on loopback or a LAN
 * that is microseconds: every connection but the one being drained stalled at ~90 KiB in flight,
 * and each read returned that much. With 4 MiB asked (a cold read of a 776 MB shard from nginx on
 * loopback, six alternating runs): 0.708 -> 0.648 s, daemon CPU 0.82 -> 0.77 s; a `cat` of a
 * 3 GB model and from_pretrained on it 8 % sooner; under the bench's WAN profile 4 % sooner. A
 * buffer set by hand ends autotuning, so it is asked only where the kernel grants it whole: one
 * capped at a small rmem_max (Debian's default is 208 KiB) would cap a long link's window far
 * below what autotuning reaches. */
long hub_receive_buffer_to_ask(long wanted, const char *rmem_max_path)
{
    if (wanted <= 0)
        return 0;
    FILE *f = fopen(rmem_max_path, "r");
    long rmem_max = 0;
    bool known = f && fscanf(f, "%ld", &rmem_max) == 1;
    if (f)
        fclose(f);
    return known && rmem_max >= wanted ? wanted : 0;
}

static int set_receive_buffer(void *userdata, curl_socket_t fd, curlsocktype purpose)
{
    const hub_client *client = userdata;
    int bytes = (int)client->receive_buffer;
    if (purpose == CURLSOCKTYPE_IPCXN)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);   /* a refusal keeps autotuning */
    return CURL_SOCKOPT_OK;
}

/* ---- loop thread ---- */

static long stall_seconds(const hub_config *cfg)
{
    long seconds = (cfg->stall_timeout_ms + 999) / 1000;
    return seconds < 1 ? 1 : seconds;
}

#define SET(opt, val)                                                                    \
    do {                                                                                 \
        if (rc == CURLE_OK)                                                              \
            rc = curl_easy_setopt(easy, opt, val);                                       \
    } while (0)

/* TLS trust and proxies. Verification is never switched off, and a CA bundle replaces the
 * system store, as REQUESTS_CA_BUNDLE does for huggingface_hub. The proxy is the config's,
 * never libcurl's own reading of the environment ("" turns that off), so hubfs does what it
 * documents. */
static CURLcode configure_transport(const hub_config *cfg, const hub_transfer *t, CURL *easy)
{
    CURLcode rc = CURLE_OK;
    const char *proxy = strncasecmp(t->url, "https:", 6) == 0 ? cfg->https_proxy : cfg->http_proxy;
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    SET(CURLOPT_PROXY, proxy ? proxy : "");
    SET(CURLOPT_NOPROXY, cfg->no_proxy ? cfg->no_proxy : "");
    /* our headers (the token among them) go to the origin only, never into a CONNECT */
    SET(CURLOPT_HEADEROPT, (long)CURLHEADER_SEPARATE);
    if (cfg->ca_bundle) {
        const char *file = cfg->ca_bundle_is_directory ? NULL : cfg->ca_bundle;
        const char *directory = cfg->ca_bundle_is_directory ? cfg->ca_bundle : NULL;
        SET(CURLOPT_CAINFO, file);
        SET(CURLOPT_CAPATH, directory);
        SET(CURLOPT_PROXY_CAINFO, file);  /* an https:// proxy is verified the same way */
        SET(CURLOPT_PROXY_CAPATH, directory);
    }
    return rc;
}

static CURLcode configure_easy(hub_client *client, hub_transfer *t, CURL *easy)
{
    const hub_config *cfg = &client->cfg;
    CURLcode rc = configure_transport(cfg, t, easy);
    SET(CURLOPT_URL, t->url);
    SET(CURLOPT_PRIVATE, t);
    SET(CURLOPT_ERRORBUFFER, t->curl_message);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_SHARE, client->loop.share);
    SET(CURLOPT_USERAGENT, client->user_agent);
    SET(CURLOPT_HTTPHEADER, t->send_token ? client->headers_with_token : client->headers_anonymous);
    SET(CURLOPT_FOLLOWLOCATION, 0L);      /* redirects are followed by hand, token-aware */
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_CONNECTTIMEOUT_MS, cfg->connect_timeout_ms);
    SET(CURLOPT_LOW_SPEED_LIMIT, 1L);
    SET(CURLOPT_LOW_SPEED_TIME, stall_seconds(cfg));
    SET(CURLOPT_NOPROGRESS, 0L);
    SET(CURLOPT_XFERINFOFUNCTION, on_progress);
    SET(CURLOPT_XFERINFODATA, t);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, t);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, t);
    SET(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_BUFFERSIZE, (long)CURL_BUFFER_BYTES);
    if (client->receive_buffer > 0) {
        SET(CURLOPT_SOCKOPTFUNCTION, set_receive_buffer);
        SET(CURLOPT_SOCKOPTDATA, client);
    }
    if (strncasecmp(t->url, "https:", 6) == 0)
        SET(CURLOPT_PIPEWAIT, 1L);        /* prefer one multiplexed HTTP/2 connection */
    if (t->head)
        SET(CURLOPT_NOBODY, 1L);
    if (t->sink == HUB_SINK_RANGE) {
        char range[48];
        snprintf(range, sizeof range, "%llu-%llu", (unsigned long long)(t->range_first + t->range_received),
                 (unsigned long long)(t->range_first + t->range_len - 1));
        SET(CURLOPT_RANGE, range);
    }
#undef SET
    return rc;
}

static void complete(hub_transfer *t, CURLcode code)
{
    t->curl_code = code;
    if (code != CURLE_OK && !t->curl_message[0])
        snprintf(t->curl_message, sizeof t->curl_message, "%s", curl_easy_strerror(code));
    atomic_fetch_sub_explicit(&t->client->in_flight, 1, memory_order_relaxed);
    pthread_mutex_lock(&t->mutex);
    t->done = true;
    pthread_cond_signal(&t->done_cond);
    pthread_mutex_unlock(&t->mutex);      /* t belongs to the caller from here on */
}

static void start_transfer(hub_client *client, hub_transfer *t)
{
    CURL *easy = curl_easy_init();
    if (!easy) {
        complete(t, CURLE_OUT_OF_MEMORY);
        return;
    }
    t->easy = easy;
    t->progress_bytes = 0;
    t->progress_at_ms = 0;   /* the stall clock starts when curl runs it, not while it queues */
    t->first_byte_at_ms = 0;
    CURLcode rc = configure_easy(client, t, easy);
    if (rc == CURLE_OK && curl_multi_add_handle(client->loop.multi, easy) != CURLM_OK)
        rc = CURLE_OUT_OF_MEMORY;
    if (rc != CURLE_OK) {
        curl_easy_cleanup(easy);
        t->easy = NULL;
        complete(t, rc);
    }
}

/* Weight of the newest read in the first-byte average: an eighth (a link's delay shows within a
 * few dozen reads; one slow answer moves it little). */
#define FIRST_BYTE_AVERAGE_WEIGHT 8

/* Folds a range read's wait for its first byte into the client's average (the loop thread is
 * its only writer). */
static void note_first_byte(hub_client *client, CURL *easy)
{
    curl_off_t sent = 0, first = 0;
    if (curl_easy_getinfo(easy, CURLINFO_PRETRANSFER_TIME_T, &sent) != CURLE_OK ||
        curl_easy_getinfo(easy, CURLINFO_STARTTRANSFER_TIME_T, &first) != CURLE_OK || first <= sent)
        return;
    int64_t sample = (int64_t)(first - sent);
    int64_t average = (int64_t)atomic_load_explicit(&client->first_byte_us, memory_order_relaxed);
    average = average ? average + (sample - average) / FIRST_BYTE_AVERAGE_WEIGHT : sample;
    atomic_store_explicit(&client->first_byte_us, (uint64_t)(average > 0 ? average : 1), memory_order_relaxed);
}

static void finish_transfer(hub_client *client, CURL *easy, CURLcode code)
{
    hub_transfer *t = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&t);
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &t->status);
    if (code == CURLE_WRITE_ERROR && t->range_done && !t->sink_problem)
        code = CURLE_OK;                  /* we stopped a 200 once our range was complete */
    if (code == CURLE_OK && t->range_buf && t->status == 206)
        note_first_byte(client, easy);
    curl_multi_remove_handle(client->loop.multi, easy);
    curl_easy_cleanup(easy);
    t->easy = NULL;
    complete(t, code);
}

static hub_transfer *take_queue(hub_loop *loop, bool *stopping)
{
    pthread_mutex_lock(&loop->queue_mutex);
    hub_transfer *queued = loop->queue_head;
    loop->queue_head = loop->queue_tail = NULL;
    *stopping = loop->stopping;
    pthread_mutex_unlock(&loop->queue_mutex);
    return queued;
}

static void *loop_main(void *arg)
{
    hub_client *client = arg;
    hub_loop *loop = &client->loop;
    for (;;) {
        bool stopping;
        hub_transfer *queued = take_queue(loop, &stopping);
        while (queued) {
            hub_transfer *next = queued->next_queued;
            if (stopping || atomic_load(&client->cancelled)) {
                queued->cancelled = true;
                complete(queued, CURLE_ABORTED_BY_CALLBACK);
            } else
                start_transfer(client, queued);
            queued = next;
        }
        if (stopping)
            break;
        int running = 0;
        curl_multi_perform(loop->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(loop->multi, &left)) != NULL)
            if (msg->msg == CURLMSG_DONE)
                finish_transfer(client, msg->easy_handle, msg->data.result);
        curl_multi_poll(loop->multi, NULL, 0, POLL_TIMEOUT_MS, NULL);
    }
    return NULL;
}

hub_status hub_loop_start(hub_client *client, hub_error *err)
{
    hub_loop *loop = &client->loop;
    client->receive_buffer =
        hub_receive_buffer_to_ask(client->cfg.receive_buffer_bytes, "/proc/sys/net/core/rmem_max");
    pthread_mutex_init(&loop->queue_mutex, NULL);
    loop->queue_mutex_ready = true;
    loop->multi = curl_multi_init();
    loop->share = curl_share_init();
    if (!loop->multi || !loop->share)
        return hub_fail(client, err, HUB_ERR_NO_MEMORY, 0, "out of memory creating curl handles");
    curl_multi_setopt(loop->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)client->cfg.max_connections);
    curl_multi_setopt(loop->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    /* only the loop thread touches the share, so it needs no lock callbacks */
    curl_share_setopt(loop->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(loop->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    if (pthread_create(&loop->thread, NULL, loop_main, client) != 0)
        return hub_fail(client, err, HUB_ERR_NO_MEMORY, 0, "cannot start the Hub client thread");
    loop->thread_started = true;
    (void)pthread_setname_np(loop->thread, "hubfs-http");
    return HUB_OK;
}

void hub_loop_stop(hub_client *client)
{
    hub_loop *loop = &client->loop;
    if (loop->thread_started) {
        pthread_mutex_lock(&loop->queue_mutex);
        loop->stopping = true;
        pthread_mutex_unlock(&loop->queue_mutex);
        curl_multi_wakeup(loop->multi);
        pthread_join(loop->thread, NULL);
        loop->thread_started = false;
    }
    if (loop->multi)
        curl_multi_cleanup(loop->multi);
    if (loop->share)
        curl_share_cleanup(loop->share);
    loop->multi = NULL;
    loop->share = NULL;
    if (loop->queue_mutex_ready)
        pthread_mutex_destroy(&loop->queue_mutex);
    loop->queue_mutex_ready = false;
}

void hub_loop_wake(hub_client *client)
{
    if (client->loop.multi)
        curl_multi_wakeup(client->loop.multi);
}

void hub_loop_run(hub_client *client, hub_transfer *t)
{
    hub_loop *loop = &client->loop;
    t->client = client;
    t->done = false;
    t->next_queued = NULL;
    atomic_fetch_add_explicit(&client->requests, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&client->in_flight, 1, memory_order_relaxed);
    pthread_mutex_lock(&loop->queue_mutex);
    if (loop->queue_tail)
        loop->queue_tail->next_queued = t;
    else
        loop->queue_head = t;
    loop->queue_tail = t;
    pthread_mutex_unlock(&loop->queue_mutex);
    curl_multi_wakeup(loop->multi);

    pthread_mutex_lock(&t->mutex);
    while (!t->done)
        pthread_cond_wait(&t->done_cond, &t->mutex);
    pthread_mutex_unlock(&t->mutex);
}
