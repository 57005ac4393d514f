/* The public API's argument and configuration checks, and offline behaviour: everything that
 * must be decided without the network (no server runs here; HF_ENDPOINT points at a closed
 * port so that an accidental request fails loudly as a network error). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "hub.h"

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

int main(void)
{
    test_status_names();
    test_bad_configs();
    test_arguments_and_offline();
    test_unreachable_endpoint();
    return check_finish("hub_api");
}
