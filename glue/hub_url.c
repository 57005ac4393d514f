/* hub_url.c — splitting an hf:// URL the way huggingface_hub's HfFileSystem reads one. */
#include "hub_url.h"

#include "parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USAGE "expected hf://[datasets/]ORG/NAME[@REVISION][/PATH]"

static int url_fail(char *err, size_t errlen, const char *url, const char *why)
{
    snprintf(err, errlen, "%s: %s (" USAGE ")", url, why);
    return -1;
}

static int hex_value(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Percent-decodes text[0, len) into a new string; NULL for a bad escape, a control character
 * or an empty result. */
static char *decode(const char *text, size_t len)
{
    char *out = malloc(len + 1);
    size_t n = 0;
    for (size_t i = 0; out && i < len; i++) {
        int value = (unsigned char)text[i];
        if (text[i] == '%') {
            int high = i + 2 < len ? hex_value(text[i + 1]) : -1;
            int low = high < 0 ? -1 : hex_value(text[i + 2]);
            value = low < 0 ? -1 : high * 16 + low;
            i += 2;
        }
        if (value < 0x20 || value == 0x7f) {
            free(out);
            return NULL;
        }
        out[n++] = (char)value;
    }
    if (out) out[n] = '\0';
    if (out && n == 0) {
        free(out);
        return NULL;
    }
    return out;
}

/* Where the revision after '@' ends: at the next '/', except for the Hub's special refs, which
 * HfFileSystem also takes unencoded. */
static size_t revision_length(const char *rev)
{
    static const char *const special[] = {"refs/convert/parquet", "refs/pr/"};
    size_t n = strlen(special[0]);
    if (strncmp(rev, special[0], n) == 0 && (rev[n] == '\0' || rev[n] == '/')) return n;
    n = strlen(special[1]);
    if (strncmp(rev, special[1], n) == 0 && rev[n] >= '0' && rev[n] <= '9') {
        while (rev[n] >= '0' && rev[n] <= '9') n++;
        if (rev[n] == '\0' || rev[n] == '/') return n;
    }
    return strcspn(rev, "/");
}

/* The repo type a URL starts with (none: a model), skipped. */
static hub_repo_type take_type(const char **rest)
{
    static const struct {
        const char *prefix;
        hub_repo_type type;
    } kinds[] = {{"datasets/", HUB_REPO_DATASET}, {"spaces/", HUB_REPO_SPACE}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        size_t n = strlen(kinds[i].prefix);
        if (strncmp(*rest, kinds[i].prefix, n) == 0) {
            *rest += n;
            return kinds[i].type;
        }
    }
    return HUB_REPO_MODEL;
}

static int parse(const char *url, hub_url *out, char *err, size_t errlen)
{
    const char *rest = url + strlen(HUB_URL_SCHEME);
    out->type = take_type(&rest);
    const char *org_end = strchr(rest, '/');
    if (!org_end || org_end == rest) return url_fail(err, errlen, url, "no ORG/NAME");
    const char *name = org_end + 1;
    size_t name_len = strcspn(name, "/@");
    const char *after = name + name_len;
    if (name_len == 0) return url_fail(err, errlen, url, "no NAME after ORG/");
    if (!(out->repo_id = strndup(rest, (size_t)(after - rest)))) return url_fail(err, errlen, url, "out of memory");
    if (!hub_repo_id_is_valid(out->repo_id))
        return url_fail(err, errlen, url, "not a repository id: ORG and NAME are letters, digits, '.', '_' and '-'");
    if (*after == '@') {
        size_t rev_len = revision_length(after + 1);
        if (!(out->revision = decode(after + 1, rev_len)))
            return url_fail(err, errlen, url, "bad REVISION after '@' (write a '/' in it as %2F)");
        after += 1 + rev_len;
    } else if (!(out->revision = strdup("main"))) {
        return url_fail(err, errlen, url, "out of memory");
    }
    out->repo_text = strndup(url, (size_t)(after - url));
    const char *path = after + strspn(after, "/");
    size_t path_len = strlen(path);
    while (path_len > 0 && path[path_len - 1] == '/') path_len--;
    if (!out->repo_text || !(out->path = strndup(path, path_len)))
        return url_fail(err, errlen, url, "out of memory");
    const char *problem = path_len ? hub_path_problem(path, path_len) : NULL;
    if (problem) {
        snprintf(err, errlen, "%s: PATH has %s: name a file or directory of the repo", url, problem);
        return -1;
    }
    return 0;
}

int hub_url_parse(const char *url, hub_url *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (strncmp(url, HUB_URL_SCHEME, strlen(HUB_URL_SCHEME)) != 0)
        return url_fail(err, errlen, url, "not an hf:// URL");
    if (parse(url, out, err, errlen) != 0) {
        hub_url_clear(out);
        return -1;
    }
    return 0;
}

void hub_url_clear(hub_url *url)
{
    free(url->repo_id);
    free(url->revision);
    free(url->path);
    free(url->repo_text);
    memset(url, 0, sizeof *url);
}
