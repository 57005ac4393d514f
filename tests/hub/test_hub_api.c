/* The public API's argument and configuration checks, and offline behaviour: everything that
 * must be decided without the network (no server runs here; HF_ENDPOINT points at a closed
 * port so that an accidental request fails loudly as a network error). */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "check.h"
#include "hub.h"
#include "internal.h"

/* libcurl allocates through these (curl_global_init_mem), so a test can see each block libcurl
 * frees and whether it still held the token. */
static const char *secret_watched;
static int secret_blocks_freed;

static void *watch_malloc(size_t size)
{
    return malloc(size);
}

static void watch_free(void *block)
{
    if (block && secret_watched &&
        memmem(block, malloc_usable_size(block), secret_watched, strlen(secret_watched)))
        secret_blocks_freed++;
    free(block);
}

static void *watch_realloc(void *block, size_t size)
{
    return realloc(block, size);
}

static char *watch_strdup(const char *text)
{
    return strdup(text);
}

static void *watch_calloc(size_t count, size_t size)
{
    return calloc(count, size);
}

static hub_config base_config(void)
{
    hub_config cfg = {
        .endpoint = "http://127.0.0.1:9",
        .token = "hf_secret_for_tests",
        .connect_timeout_ms = 200,
        .stall_timeout_ms = 200,
        .max_retries = 0,
        .backoff_initial_ms = 1,
        .backoff_max_ms = 1,
        .max_connections = 4,
    };
    return cfg;
}

static void test_status_names(void)
{
    for (int a = HUB_OK; a <= HUB_ERR_NO_MEMORY; a++) {
        CHECK(strcmp(hub_status_name((hub_status)a), "unknown") != 0);
        for (int b = a + 1; b <= HUB_ERR_NO_MEMORY; b++)
            CHECK(strcmp(hub_status_name((hub_status)a), hub_status_name((hub_status)b)) != 0);
    }
    CHECK(strcmp(hub_status_name(HUB_ERR_GATED), "gated") == 0);
}

static void test_bad_configs(void)
{
    hub_client *client = (hub_client *)1;
    hub_error err;
    hub_config cfg = base_config();
    cfg.endpoint = "file:///tmp";
    CHECK_EQ_INT(hub_client_new(&cfg, &client, &err), HUB_ERR_INVALID_ARGUMENT);
    CHECK(client == NULL);
    cfg = base_config();
    cfg.max_connections = 0;
    CHECK_EQ_INT(hub_client_new(&cfg, &client, &err), HUB_ERR_INVALID_ARGUMENT);
    cfg = base_config();
    cfg.backoff_max_ms = 0;
    CHECK_EQ_INT(hub_client_new(&cfg, &client, &err), HUB_ERR_INVALID_ARGUMENT);
    cfg = base_config();
    cfg.receive_buffer_bytes = -1;
    CHECK_EQ_INT(hub_client_new(&cfg, &client, &err), HUB_ERR_INVALID_ARGUMENT);
    cfg.receive_buffer_bytes = HUB_RECEIVE_BUFFER_MAX + 1;   /* past what SO_RCVBUF's int holds doubled */
    CHECK_EQ_INT(hub_client_new(&cfg, &client, &err), HUB_ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(err.message, "receive buffer");
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* A receive buffer set by hand ends the kernel's autotuning: asked only where rmem_max grants
 * it whole, never capped. */
static void test_receive_buffer_only_where_granted_whole(void)
{
    char path[] = "/tmp/hubfs-rmem-max-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    write_text(path, "4194304\n");
    CHECK_EQ_INT(hub_receive_buffer_to_ask(4L << 20, path), 4L << 20);
    CHECK_EQ_INT(hub_receive_buffer_to_ask(96 * 1024, path), 96 * 1024);
    CHECK_EQ_INT(hub_receive_buffer_to_ask(0, path), 0);
    write_text(path, "212992\n");   /* Debian's default: 4 MiB would be capped, so not asked */
    CHECK_EQ_INT(hub_receive_buffer_to_ask(4L << 20, path), 0);
    CHECK_EQ_INT(hub_receive_buffer_to_ask(212992, path), 212992);
    write_text(path, "lots\n");
    CHECK_EQ_INT(hub_receive_buffer_to_ask(96 * 1024, path), 0);
    unlink(path);
    CHECK_EQ_INT(hub_receive_buffer_to_ask(96 * 1024, path), 0);   /* no such file */
}

static void test_arguments_and_offline(void)
{
    hub_config cfg = base_config();
    cfg.offline = true;
    hub_client *client;
    hub_error err;
    CHECK_EQ_INT(hub_client_new(&cfg, &client, &err), HUB_OK);
    hub_repo repo = {HUB_REPO_MODEL, "org/model"};
    char commit[HUB_SHA_HEX_LEN + 1];

    CHECK_EQ_INT(hub_resolve_revision(client, &repo, "main", commit, &err), HUB_ERR_OFFLINE);
    CHECK_STR_CONTAINS(err.message, "HF_HUB_OFFLINE=1 forbids network access");
    CHECK_EQ_INT(hub_resolve_revision(client, &repo, "0123456789ABCDEF0123456789abcdef01234567",
                                      commit, &err), HUB_OK);
    CHECK(strcmp(commit, "0123456789abcdef0123456789abcdef01234567") == 0);

    hub_tree tree;
    CHECK_EQ_INT(hub_list_tree(client, &repo, "main", &tree, &err), HUB_ERR_OFFLINE);
    CHECK(tree.entries == NULL && tree.count == 0);
    hub_file *file = (hub_file *)1;
    CHECK_EQ_INT(hub_file_open(client, &repo, "main", "config.json", &file, &err), HUB_ERR_OFFLINE);
    CHECK(file == NULL);

    hub_repo bad_repo = {HUB_REPO_MODEL, "org/../x"};
    CHECK_EQ_INT(hub_resolve_revision(client, &bad_repo, "main", commit, &err),
                 HUB_ERR_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(err.message, "is not a repository id");
    hub_repo bad_type = {(hub_repo_type)7, "org/model"};
    CHECK_EQ_INT(hub_list_tree(client, &bad_type, "main", &tree, &err), HUB_ERR_INVALID_ARGUMENT);
    CHECK_EQ_INT(hub_file_open(client, &repo, "main", "a/../../b", &file, &err),
                 HUB_ERR_INVALID_ARGUMENT);
    CHECK_EQ_INT(hub_file_open(client, &repo, "", "a", &file, &err), HUB_ERR_INVALID_ARGUMENT);
    CHECK(strstr(err.message, cfg.token) == NULL);

    hub_counters counters;
    hub_get_counters(client, &counters);
    CHECK_EQ_INT(counters.requests, 0);   /* nothing above may touch the network */
    hub_client_free(client);
}

static void test_unreachable_endpoint(void)
{
    hub_config cfg = base_config();
    hub_client *client;
    hub_error err;
    CHECK_EQ_INT(hub_client_new(&cfg, &client, &err), HUB_OK);
    hub_repo repo = {HUB_REPO_DATASET, "org/data"};
    char commit[HUB_SHA_HEX_LEN + 1];
    CHECK_EQ_INT(hub_resolve_revision(client, &repo, "main", commit, &err), HUB_ERR_NETWORK);
    CHECK_STR_CONTAINS(err.message, "127.0.0.1");
    CHECK(strstr(err.message, cfg.token) == NULL);
    hub_counters counters;
    hub_get_counters(client, &counters);
    CHECK_EQ_INT(counters.requests, 1);
    CHECK_EQ_INT(counters.in_flight, 0);
    hub_client_free(client);
}

/* The Authorization header lives in a curl_slist, which libcurl frees: it must be zeroed
 * first, so that the token does not linger in freed memory. */
static void test_token_wiped_from_curl_memory(void)
{
    hub_config cfg = base_config();
    cfg.offline = true;                  /* no transfer: only the header list holds the token */
    hub_client *client;
    hub_error err;
    secret_watched = cfg.token;
    CHECK_EQ_INT(hub_client_new(&cfg, &client, &err), HUB_OK);
    hub_client_free(client);
    secret_watched = NULL;
    CHECK_EQ_INT(secret_blocks_freed, 0);
}

int main(void)
{
    /* before any client: the first curl_global_init chooses libcurl's allocator */
    CHECK_EQ_INT(curl_global_init_mem(CURL_GLOBAL_DEFAULT, watch_malloc, watch_free, watch_realloc,
                                      watch_strdup, watch_calloc), CURLE_OK);
    test_token_wiped_from_curl_memory();
    test_status_names();
    test_bad_configs();
    test_receive_buffer_only_where_granted_whole();
    test_arguments_and_offline();
    test_unreachable_endpoint();
    curl_global_cleanup();
    return check_finish("hub_api");
}
