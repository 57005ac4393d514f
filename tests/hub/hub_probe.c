/* hub_probe — performs Hub client calls given on the command line and prints one JSON object,
 * so that pytest (test_hub_client.py) can drive the library against the emulator.
 *
 *   hub_probe config
 *   hub_probe resolve TYPE REPO REVISION
 *   hub_probe tree    TYPE REPO REVISION
 *   hub_probe open    TYPE REPO REVISION PATH
 *   hub_probe read    TYPE REPO REVISION PATH OUT [--offset N] [--length N] [--chunk N]
 *                     [--threads N] [--pause-ms N]
 *   hub_probe fetch   TYPE REPO REVISION PATH OUT MAX
 *
 * TYPE is model, dataset or space. The configuration comes from the environment
 * (hub_config_from_env). `read` reads [offset, offset+length) (default: the whole file) in
 * chunks of --chunk bytes, spread over --threads threads, sleeping --pause-ms between chunks,
 * and writes the bytes to OUT. Output: {"status", "http_status", "message", ..., "counters"}.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hub.h"

static void print_json_string(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

static void print_result(hub_status status, const hub_error *err, hub_client *client)
{
    printf("\"status\": \"%s\", \"http_status\": %ld, \"message\": ", hub_status_name(status),
           status == HUB_OK ? 0L : err->http_status);
    print_json_string(status == HUB_OK ? "" : err->message);
    if (client) {
        hub_counters c;
        hub_get_counters(client, &c);
        printf(", \"counters\": {\"requests\": %llu, \"bytes_received\": %llu, \"retries\": %llu, "
               "\"resolves\": %llu, \"in_flight\": %llu, \"first_byte_us\": %llu}",
               (unsigned long long)c.requests, (unsigned long long)c.bytes_received,
               (unsigned long long)c.retries, (unsigned long long)c.resolves,
               (unsigned long long)c.in_flight, (unsigned long long)c.first_byte_us);
    }
    printf("}\n");
}

static bool parse_type(const char *name, hub_repo_type *type)
{
    if (strcmp(name, "model") == 0)
        *type = HUB_REPO_MODEL;
    else if (strcmp(name, "dataset") == 0)
        *type = HUB_REPO_DATASET;
    else if (strcmp(name, "space") == 0)
        *type = HUB_REPO_SPACE;
    else
        return false;
    return true;
}

static void print_info(const hub_file_info *info)
{
    printf("\"size\": %llu, \"etag\": ", (unsigned long long)info->size);
    print_json_string(info->etag);
    printf(", \"commit\": \"%s\", \"is_lfs\": %s, ", info->commit, info->is_lfs ? "true" : "false");
}

static hub_status run_tree(hub_client *client, const hub_repo *repo, const char *rev, hub_error *err)
{
    hub_tree tree;
    hub_status status = hub_list_tree(client, repo, rev, &tree, err);
    if (status != HUB_OK)
        return status;
    printf("\"entries\": [");
    for (size_t i = 0; i < tree.count; i++) {
        const hub_tree_entry *e = &tree.entries[i];
        printf("%s{\"path\": ", i ? ", " : "");
        print_json_string(e->path);
        printf(", \"type\": \"%s\", \"size\": %llu, \"oid\": \"%s\", \"lfs_sha256\": \"%s\"}",
               e->is_directory ? "directory" : "file", (unsigned long long)e->size, e->oid,
               e->is_lfs ? e->lfs_sha256 : "");
    }
    printf("], \"skipped\": %zu, \"skipped_shown\": ", tree.skipped);
    print_json_string(tree.skipped_shown);
    printf(", \"truncated\": ");
    print_json_string(tree.truncated);
    printf(", ");
    hub_tree_free(&tree);
    return HUB_OK;
}

typedef struct read_job {
    hub_file *file;
    char *buf;
    uint64_t first, end, chunk;
    long pause_ms;
    pthread_mutex_t *mutex;
    uint64_t *next_chunk;        /* shared cursor, guarded by mutex */
    hub_status status;
    hub_error err;
} read_job;

static void *read_worker(void *arg)
{
    read_job *job = arg;
    job->status = HUB_OK;
    for (;;) {
        pthread_mutex_lock(job->mutex);
        uint64_t at = *job->next_chunk;
        if (at < job->end)
            *job->next_chunk = at + job->chunk;
        pthread_mutex_unlock(job->mutex);
        if (at >= job->end)
            break;
        size_t len = (size_t)(job->end - at < job->chunk ? job->end - at : job->chunk);
        hub_status status = hub_file_read(job->file, at, job->buf + (at - job->first), len, &job->err);
        if (status != HUB_OK) {
            job->status = status;
            break;
        }
        if (job->pause_ms) {
            struct timespec ts = {job->pause_ms / 1000, (job->pause_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

static long option(int argc, char **argv, int from, const char *name, long fallback)
{
    for (int i = from; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return strtol(argv[i + 1], NULL, 10);
    return fallback;
}

static bool write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    bool ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

static hub_status run_read(hub_client *client, const hub_repo *repo, int argc, char **argv,
                           hub_error *err)
{
    hub_file *file;
    hub_status status = hub_file_open(client, repo, argv[4], argv[5], &file, err);
    if (status != HUB_OK)
        return status;
    const hub_file_info *info = hub_file_get_info(file);
    print_info(info);
    uint64_t offset = (uint64_t)option(argc, argv, 7, "--offset", 0);
    uint64_t length = (uint64_t)option(argc, argv, 7, "--length", (long)(info->size - offset));
    uint64_t chunk = (uint64_t)option(argc, argv, 7, "--chunk", (long)(length ? length : 1));
    int threads = (int)option(argc, argv, 7, "--threads", 1);
    if (threads < 1 || threads > 64)
        threads = 1;
    char *buf = malloc(length ? (size_t)length : 1);
    pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
    uint64_t cursor = offset;
    read_job jobs[64];
    pthread_t tids[64];
    for (int i = 0; i < threads; i++) {
        jobs[i] = (read_job){.file = file, .buf = buf, .first = offset, .end = offset + length,
                             .chunk = chunk ? chunk : 1, .mutex = &mutex, .next_chunk = &cursor,
                             .pause_ms = option(argc, argv, 7, "--pause-ms", 0)};
        pthread_create(&tids[i], NULL, read_worker, &jobs[i]);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);
    for (int i = 0; i < threads && status == HUB_OK; i++)
        if (jobs[i].status != HUB_OK) {
            status = jobs[i].status;
            *err = jobs[i].err;
        }
    if (status == HUB_OK && !write_file(argv[6], buf, (size_t)length))
        status = HUB_ERR_INVALID_ARGUMENT;
    printf("\"read_bytes\": %llu, ", (unsigned long long)length);
    free(buf);
    hub_file_close(file);
    return status;
}

static int usage(void)
{
    fprintf(stderr, "usage: hub_probe config | resolve|tree|open TYPE REPO REV [PATH] | read TYPE "
                    "REPO REV PATH OUT [options] | fetch TYPE REPO REV PATH OUT MAX\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    const char *command = argv[1];
    hub_error err = {0};
    hub_config cfg;
    printf("{");
    hub_status status = hub_config_from_env(&cfg, &err);
    if (status != HUB_OK) {
        print_result(status, &err, NULL);
        return 0;   /* an error answer is a result; exit codes mean crashes */
    }
    if (strcmp(command, "config") == 0) {
        printf("\"endpoint\": ");
        print_json_string(cfg.endpoint);
        printf(", \"has_token\": %s, \"token_length\": %zu, \"offline\": %s, "
               "\"connect_timeout_ms\": %ld, \"stall_timeout_ms\": %ld, \"max_retries\": %d, "
               "\"backoff_initial_ms\": %ld, \"backoff_max_ms\": %ld, ",
               cfg.token ? "true" : "false", cfg.token ? strlen(cfg.token) : 0,
               cfg.offline ? "true" : "false", cfg.connect_timeout_ms, cfg.stall_timeout_ms,
               cfg.max_retries, cfg.backoff_initial_ms, cfg.backoff_max_ms);
        print_result(HUB_OK, &err, NULL);
        hub_config_clear(&cfg);
        return 0;
    }
    hub_repo repo;
    if (argc < 5 || !parse_type(argv[2], &repo.type)) {
        hub_config_clear(&cfg);
        return usage();
    }
    repo.id = argv[3];
    hub_client *client;
    status = hub_client_new(&cfg, &client, &err);
    hub_config_clear(&cfg);
    if (status != HUB_OK) {
        print_result(status, &err, NULL);
        return 0;   /* an error answer is a result; exit codes mean crashes */
    }
    if (strcmp(command, "resolve") == 0) {
        char commit[HUB_SHA_HEX_LEN + 1];
        status = hub_resolve_revision(client, &repo, argv[4], commit, &err);
        if (status == HUB_OK)
            printf("\"commit\": \"%s\", ", commit);
    } else if (strcmp(command, "tree") == 0) {
        status = run_tree(client, &repo, argv[4], &err);
    } else if (strcmp(command, "open") == 0 && argc >= 6) {
        hub_file *file;
        status = hub_file_open(client, &repo, argv[4], argv[5], &file, &err);
        if (status == HUB_OK) {
            print_info(hub_file_get_info(file));
            hub_file_close(file);
        }
    } else if (strcmp(command, "read") == 0 && argc >= 7) {
        status = run_read(client, &repo, argc, argv, &err);
    } else if (strcmp(command, "fetch") == 0 && argc >= 8) {
        char *data;
        size_t size;
        status = hub_fetch_small_file(client, &repo, argv[4], argv[5], strtoull(argv[7], NULL, 10),
                                      &data, &size, &err);
        if (status == HUB_OK) {
            printf("\"size\": %zu, ", size);
            if (!write_file(argv[6], data, size))
                status = HUB_ERR_INVALID_ARGUMENT;
            free(data);
        }
    } else {
        hub_client_free(client);
        return usage();
    }
    print_result(status, &err, client);
    hub_client_free(client);
    return 0;
}
