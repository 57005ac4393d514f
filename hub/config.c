/* config.c — the client's configuration from the environment, as huggingface_hub reads it.
 *
 * Besides the HF_* variables, two hubfs-specific ones tune retries (tests make them fast):
 *   HUBFS_MAX_RETRIES   attempts after the first for retryable failures (default 5)
 *   HUBFS_BACKOFF_MS    first backoff wait in ms (default 1000; doubles up to 8x that)
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

#define DEFAULT_ENDPOINT "https://huggingface.co"
#define DEFAULT_TIMEOUT_MS 10000L
#define TOKEN_FILE_MAX 4096

/* A copy of s without leading and trailing whitespace; NULL (not an error) when that is empty. */
static char *strip_dup(const char *s, size_t len, bool *no_memory)
{
    while (len > 0 && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)s[len - 1]))
        len--;
    if (len == 0)
        return NULL;
    char *copy = strndup(s, len);
    if (!copy)
        *no_memory = true;
    return copy;
}

static char *token_from_file(const char *path, bool *no_memory)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;                      /* no token file: anonymous */
    char buf[TOKEN_FILE_MAX];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return strip_dup(buf, n, no_memory);
}

static char *token_file_path(void)
{
    const char *explicit_path = getenv("HF_TOKEN_PATH");
    if (explicit_path && *explicit_path)
        return strdup(explicit_path);
    const char *hf_home = getenv("HF_HOME");
    const char *home = getenv("HOME");
    char *path = NULL;
    int rc;
    if (hf_home && *hf_home)
        rc = asprintf(&path, "%s/token", hf_home);
    else if (home && *home)
        rc = asprintf(&path, "%s/.cache/huggingface/token", home);
    else
        return NULL;
    return rc < 0 ? NULL : path;
}

/* HF_TOKEN, then HUGGING_FACE_HUB_TOKEN, then the token file. */
static hub_status find_token(hub_config *cfg, hub_error *err)
{
    bool no_memory = false;
    const char *env_names[] = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"};
    for (size_t i = 0; i < 2 && !cfg->token; i++) {
        const char *value = getenv(env_names[i]);
        if (value && *value)
            cfg->token = strip_dup(value, strlen(value), &no_memory);
    }
    if (!cfg->token && !no_memory) {
        char *path = token_file_path();
        if (path)
            cfg->token = token_from_file(path, &no_memory);
        free(path);
    }
    if (no_memory)
        return hub_fail(NULL, err, HUB_ERR_NO_MEMORY, 0, "out of memory reading the token");
    for (const char *p = cfg->token; p && *p; p++)
        if ((unsigned char)*p < 0x21 || *p == 0x7f)
            return hub_fail(NULL, err, HUB_ERR_INVALID_ARGUMENT, 0,
                            "the Hub token (HF_TOKEN or the token file) contains whitespace or "
                            "control characters: fix it");
    return HUB_OK;
}

static bool env_is_true(const char *name)
{
    const char *value = getenv(name);
    if (!value)
        return false;
    return strcmp(value, "1") == 0 || strcasecmp(value, "true") == 0 ||
           strcasecmp(value, "yes") == 0 || strcasecmp(value, "on") == 0;
}

/* A positive number of seconds (fractions allowed) as ms, or fallback. */
static hub_status env_seconds_ms(const char *name, long fallback, long *out, hub_error *err)
{
    const char *value = getenv(name);
    *out = fallback;
    if (!value || !*value)
        return HUB_OK;
    char *end;
    double seconds = strtod(value, &end);
    if (*end != '\0' || !(seconds > 0 && seconds <= 86400))
        return hub_fail(NULL, err, HUB_ERR_INVALID_ARGUMENT, 0,
                        "%s=\"%.40s\" is not a number of seconds between 0 and 86400", name, value);
    *out = (long)(seconds * 1000 + 0.5);
    return HUB_OK;
}

static hub_status env_long(const char *name, long min, long max, long *out, hub_error *err)
{
    const char *value = getenv(name);
    if (!value || !*value)
        return HUB_OK;
    char *end;
    long number = strtol(value, &end, 10);
    if (*end != '\0' || number < min || number > max)
        return hub_fail(NULL, err, HUB_ERR_INVALID_ARGUMENT, 0,
                        "%s=\"%.40s\" is not a whole number from %ld to %ld", name, value, min, max);
    *out = number;
    return HUB_OK;
}

static hub_status read_endpoint(hub_config *cfg, hub_error *err)
{
    const char *value = getenv("HF_ENDPOINT");
    if (!value || !*value)
        value = DEFAULT_ENDPOINT;
    size_t len = strlen(value);
    while (len > 0 && value[len - 1] == '/')
        len--;
    cfg->endpoint = strndup(value, len);
    if (!cfg->endpoint)
        return hub_fail(NULL, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
    hub_origin origin;
    if (!hub_url_origin(cfg->endpoint, &origin))
        return hub_fail(NULL, err, HUB_ERR_INVALID_ARGUMENT, 0,
                        "HF_ENDPOINT=\"%.200s\" is not an http:// or https:// URL", value);
    return HUB_OK;
}

hub_status hub_config_from_env(hub_config *cfg, hub_error *err)
{
    hub_error_clear(err);
    memset(cfg, 0, sizeof *cfg);
    cfg->max_retries = 5;
    cfg->backoff_initial_ms = 1000;
    cfg->backoff_max_ms = 8000;
    cfg->max_connections = 16;
    cfg->offline = env_is_true("HF_HUB_OFFLINE");

    long max_retries = cfg->max_retries, backoff = -1;
    hub_status status = read_endpoint(cfg, err);
    if (status == HUB_OK)
        status = find_token(cfg, err);
    if (status == HUB_OK)
        status = env_seconds_ms("HF_HUB_ETAG_TIMEOUT", DEFAULT_TIMEOUT_MS, &cfg->connect_timeout_ms, err);
    if (status == HUB_OK)
        status = env_seconds_ms("HF_HUB_DOWNLOAD_TIMEOUT", DEFAULT_TIMEOUT_MS, &cfg->stall_timeout_ms,
                                err);
    if (status == HUB_OK)
        status = env_long("HUBFS_MAX_RETRIES", 0, 100, &max_retries, err);
    if (status == HUB_OK)
        status = env_long("HUBFS_BACKOFF_MS", 1, 60000, &backoff, err);
    if (status != HUB_OK) {
        hub_config_clear(cfg);
        return status;
    }
    cfg->max_retries = (int)max_retries;
    if (backoff > 0) {
        cfg->backoff_initial_ms = backoff;
        cfg->backoff_max_ms = backoff * 8;
    }
    return HUB_OK;
}

void hub_config_clear(hub_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->endpoint);
    if (cfg->token) {
        /* the token should not linger in freed memory */
        volatile char *p = cfg->token;
        while (*p)
            *p++ = '\0';
        free(cfg->token);
    }
    cfg->endpoint = NULL;
    cfg->token = NULL;
}
