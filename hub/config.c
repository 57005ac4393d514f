/* config.c — the client's configuration from the environment, as huggingface_hub reads it.
 *
 * Besides the HF_* variables, two hubfs-specific ones tune retries (tests make them fast):
 *   HUBFS_MAX_RETRIES   attempts after the first for retryable failures (default 5)
 *   HUBFS_BACKOFF_MS    first backoff wait in ms (default 1000; doubles up to 8x that)
 *
 * TLS and proxies are read as huggingface_hub's HTTP stacks and curl read them: the CA bundle
 * from CURL_CA_BUNDLE, REQUESTS_CA_BUNDLE or SSL_CERT_FILE (the first one set; an empty value
 * is unset and never turns verification off); proxies from the lowercase variable, else the
 * uppercase one, else all_proxy / ALL_PROXY. Unlike libcurl, which ignores HTTP_PROXY in
 * uppercase (httpoxy: a CGI program gets it from a request's "Proxy:" header), hubfs honours
 * it as Python does: everywhere except under CGI (REQUEST_METHOD set).
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* Frees a copy of the token, zeroing it first so that it does not linger in freed memory. */
static void free_secret(char *secret)
{
    if (secret) {
        explicit_bzero(secret, strlen(secret));
        free(secret);
    }
}

/* The token in text (whitespace around it stripped, as huggingface_hub does) into *token_out,
 * NULL when there is none. Whitespace, control or non-ASCII characters inside are refused,
 * naming source: a CR LF would end the Authorization header and start another. */
static hub_status take_token(const char *text, size_t len, const char *source, char **token_out,
                             hub_error *err)
{
    bool no_memory = false;
    char *token = strip_dup(text, len, &no_memory);
    if (no_memory)
        return hub_fail(NULL, err, HUB_ERR_NO_MEMORY, 0, "out of memory reading the token");
    for (const char *p = token; p && *p; p++) {
        if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
            free_secret(token);
            return hub_fail(NULL, err, HUB_ERR_INVALID_ARGUMENT, 0,
                            "the Hub token from %s has whitespace, control or non-ASCII "
                            "characters inside it: it must hold the token alone, on one line",
                            source);
        }
    }
    *token_out = token;
    return HUB_OK;
}

/* The token of the file at path into *token_out (NULL when the file is empty, or with
 * missing_ok when there is no such file); source names the file in messages. */
static hub_status read_token_file(const char *path, const char *source, bool missing_ok,
                                  char **token_out, hub_error *err)
{
    *token_out = NULL;
    FILE *f = fopen(path, "re");
    if (!f && missing_ok && (errno == ENOENT || errno == ENOTDIR))
        return HUB_OK;                    /* no token file: anonymous */
    if (!f)
        return hub_fail(NULL, err, HUB_ERR_INVALID_ARGUMENT, 0, "cannot read %s: %s", source,
                        strerror(errno));
    char buf[TOKEN_FILE_MAX + 1];
    size_t n = fread(buf, 1, sizeof buf, f);
    int read_error = ferror(f) ? errno : 0;
    fclose(f);
    hub_status status;
    if (read_error)
        status = hub_fail(NULL, err, HUB_ERR_INVALID_ARGUMENT, 0, "cannot read %s: %s", source,
                          strerror(read_error));
    else if (n > TOKEN_FILE_MAX)
        status = hub_fail(NULL, err, HUB_ERR_INVALID_ARGUMENT, 0,
                          "%s is longer than %d bytes: it must hold the token alone", source,
                          TOKEN_FILE_MAX);
    else
        status = take_token(buf, n, source, token_out, err);
    explicit_bzero(buf, sizeof buf);
    return status;
}

/* Where huggingface_hub looks for its token file; *origin says why, for messages. */
static char *token_file_path(const char **origin)
{
    const char *explicit_path = getenv("HF_TOKEN_PATH");
    if (explicit_path && *explicit_path) {
        *origin = "HF_TOKEN_PATH";
        return strdup(explicit_path);
    }
    const char *hf_home = getenv("HF_HOME");
    const char *home = getenv("HOME");
    char *path = NULL;
    int rc;
    if (hf_home && *hf_home) {
        *origin = "$HF_HOME/token";
        rc = asprintf(&path, "%s/token", hf_home);
    } else if (home && *home) {
        *origin = "the default token file";
        rc = asprintf(&path, "%s/.cache/huggingface/token", home);
    } else {
        return NULL;
    }
    return rc < 0 ? NULL : path;
}

/* HF_TOKEN, then HUGGING_FACE_HUB_TOKEN, then the token file. */
static hub_status find_token(hub_config *cfg, hub_error *err)
{
    static const char *const env_names[] = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"};
    for (size_t i = 0; i < sizeof env_names / sizeof *env_names; i++) {
        const char *value = getenv(env_names[i]);
        if (!value || !*value)
            continue;
        hub_status status = take_token(value, strlen(value), env_names[i], &cfg->token, err);
        if (status != HUB_OK || cfg->token)
            return status;
    }
    const char *origin = NULL;
    char *path = token_file_path(&origin);
    if (!path)
        return HUB_OK;
    char source[PATH_MAX + 64];
    snprintf(source, sizeof source, "the token file %s (%s)", path, origin);
    hub_status status = read_token_file(path, source, true, &cfg->token, err);
    free(path);
    return status;
}

hub_status hub_config_read_token_file(hub_config *cfg, const char *path, hub_error *err)
{
    hub_error_clear(err);
    char source[PATH_MAX + 32];
    snprintf(source, sizeof source, "the token file %s", path);
    char *token;
    hub_status status = read_token_file(path, source, false, &token, err);
    if (status == HUB_OK) {
        free_secret(cfg->token);
        cfg->token = token;
    }
    return status;
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

/* Why path cannot serve as a CA bundle, or NULL when it can. */
static const char *ca_bundle_problem(const char *path, bool *is_directory)
{
    struct stat info;
    if (!path || !*path)
        return "an empty path";
    if (stat(path, &info) != 0 || access(path, R_OK) != 0)
        return strerror(errno);
    if (!S_ISREG(info.st_mode) && !S_ISDIR(info.st_mode))
        return "not a file or directory";
    *is_directory = S_ISDIR(info.st_mode);
    return NULL;
}

hub_status hub_config_set_ca_bundle(hub_config *cfg, const char *path, const char *origin,
                                    hub_error *err)
{
    hub_error_clear(err);
    if (!origin)
        origin = "the configuration";
    bool is_directory = false;
    const char *problem = ca_bundle_problem(path, &is_directory);
    if (problem)
        return hub_fail(NULL, err, HUB_ERR_INVALID_ARGUMENT, 0,
                        "cannot use the CA bundle \"%.300s\" given by %s (%s): give a readable "
                        "PEM file of the CA certificates to trust",
                        path ? path : "", origin, problem);
    char *copy = strdup(path);
    if (!copy)
        return hub_fail(NULL, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
    free(cfg->ca_bundle);
    cfg->ca_bundle = copy;
    cfg->ca_bundle_is_directory = is_directory;
    cfg->ca_bundle_origin = origin;
    return HUB_OK;
}

#define COUNT(array) (sizeof(array) / sizeof *(array))

/* The value of the first of names that is set and not empty, or NULL. */
static const char *first_env(const char *const *names, size_t count, const char **name_out)
{
    for (size_t i = 0; i < count; i++) {
        const char *value = getenv(names[i]);
        if (value && *value) {
            *name_out = names[i];
            return value;
        }
    }
    return NULL;
}

static hub_status read_ca_bundle(hub_config *cfg, hub_error *err)
{
    static const char *const names[] = {"CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"};
    const char *name = NULL;
    const char *path = first_env(names, COUNT(names), &name);
    return path ? hub_config_set_ca_bundle(cfg, path, name, err) : HUB_OK;
}

/* *slot = a copy of value, or NULL for none; false when out of memory. */
static bool copy_optional(char **slot, const char *value)
{
    *slot = value ? strdup(value) : NULL;
    return !value || *slot;
}

static bool copy_first_env(char **slot, const char *const *names, size_t count)
{
    const char *name;
    return copy_optional(slot, first_env(names, count, &name));
}

static hub_status read_proxies(hub_config *cfg, hub_error *err)
{
    static const char *const https_names[] = {"https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"};
    static const char *const http_names[] = {"http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"};
    static const char *const cgi_http_names[] = {"http_proxy", "all_proxy", "ALL_PROXY"};
    static const char *const no_proxy_names[] = {"no_proxy", "NO_PROXY"};
    bool under_cgi = getenv("REQUEST_METHOD") != NULL;
    bool ok = copy_first_env(&cfg->https_proxy, https_names, COUNT(https_names)) &&
              (under_cgi ? copy_first_env(&cfg->http_proxy, cgi_http_names, COUNT(cgi_http_names))
                         : copy_first_env(&cfg->http_proxy, http_names, COUNT(http_names))) &&
              copy_first_env(&cfg->no_proxy, no_proxy_names, COUNT(no_proxy_names));
    return ok ? HUB_OK : hub_fail(NULL, err, HUB_ERR_NO_MEMORY, 0, "out of memory");
}

bool hub_config_copy_transport(hub_config *dst, const hub_config *src)
{
    /* every field is copied, even after a failure, so that none still points into src */
    bool ok = copy_optional(&dst->ca_bundle, src->ca_bundle);
    ok = copy_optional(&dst->https_proxy, src->https_proxy) && ok;
    ok = copy_optional(&dst->http_proxy, src->http_proxy) && ok;
    return copy_optional(&dst->no_proxy, src->no_proxy) && ok;
}

hub_status hub_config_from_env(hub_config *cfg, hub_error *err)
{
    hub_error_clear(err);
    memset(cfg, 0, sizeof *cfg);
    cfg->max_retries = 5;
    cfg->backoff_initial_ms = 1000;
    cfg->backoff_max_ms = 8000;
    cfg->max_connections = 16;
    cfg->receive_buffer_bytes = HUB_RECEIVE_BUFFER_DEFAULT;
    cfg->min_rate_bytes_per_s = 16 * 1024;
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
    if (status == HUB_OK)
        status = read_ca_bundle(cfg, err);
    if (status == HUB_OK)
        status = read_proxies(cfg, err);
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
    free(cfg->fallback_endpoint);
    free_secret(cfg->token);
    cfg->endpoint = cfg->fallback_endpoint = NULL;
    cfg->token = NULL;
    free(cfg->ca_bundle);
    free(cfg->https_proxy);
    free(cfg->http_proxy);
    free(cfg->no_proxy);
    cfg->ca_bundle = cfg->https_proxy = cfg->http_proxy = cfg->no_proxy = NULL;
}
