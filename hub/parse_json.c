/* parse_json.c — repo-info and tree-page JSON, error bodies, and the path/id validators. */
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "parse.h"

#define JSON_MAX_NESTING 64            /* our answers are 3 levels deep */
#define JSON_SAFE_INTEGER 9007199254740992.0   /* 2^53: larger sizes lose precision in a double */

bool hub_is_hex(const char *s, size_t n)
{
    if (!s)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    return s[n] == '\0';
}

bool hub_is_commit_sha(const char *revision)
{
    if (!hub_is_hex(revision, HUB_SHA_HEX_LEN))
        return false;
    for (size_t i = 0; i < HUB_SHA_HEX_LEN; i++)
        if (isupper((unsigned char)revision[i]))
            return false;
    return true;
}

static void copy_lower_hex(char *out, const char *hex, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)hex[i]);
    out[n] = '\0';
}

bool hub_path_is_valid(const char *path, size_t len)
{
    if (!path || len == 0 || len > HUB_PATH_MAX || path[0] == '/')
        return false;
    size_t component_start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && (unsigned char)path[i] < 0x20)
            return false;                 /* NUL and control characters */
        if (i < len && path[i] == 0x7f)
            return false;
        if (i == len || path[i] == '/') {
            size_t n = i - component_start;
            const char *c = path + component_start;
            if (n == 0 || n > HUB_NAME_MAX || (n == 1 && c[0] == '.') ||
                (n == 2 && c[0] == '.' && c[1] == '.'))
                return false;
            component_start = i + 1;
        }
    }
    return true;
}

static bool repo_id_part_is_valid(const char *s, size_t n)
{
    if (n == 0 || n > 96 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && ch != '-' && ch != '_' && ch != '.')
            return false;
    }
    return true;
}

bool hub_repo_id_is_valid(const char *id)
{
    if (!id)
        return false;
    size_t len = strnlen(id, 201);
    if (len == 0 || len > 200)
        return false;
    const char *slash = memchr(id, '/', len);
    if (!slash)
        return repo_id_part_is_valid(id, len);
    size_t org_len = (size_t)(slash - id);
    return repo_id_part_is_valid(id, org_len) &&
           repo_id_part_is_valid(slash + 1, len - org_len - 1);
}

/* cJSON turns "\u0000" into a NUL that silently shortens the string; a path shortened that
 * way would name another file, so such bodies are refused before parsing. */
static bool json_has_escaped_nul(const char *json, size_t len)
{
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char ch = json[i];
        if (!in_string) {
            in_string = ch == '"';
        } else if (ch == '"') {
            in_string = false;
        } else if (ch == '\\' && i + 1 < len) {
            if (json[i + 1] == 'u' && i + 5 < len && memcmp(json + i + 2, "0000", 4) == 0)
                return true;
            i++;                          /* skip the escaped character */
        }
    }
    return false;
}

static bool json_nesting_is_bounded(const char *json, size_t len)
{
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char ch = json[i];
        if (in_string) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_string = false;
        } else if (ch == '"') {
            in_string = true;
        } else if (ch == '[' || ch == '{') {
            if (++depth > JSON_MAX_NESTING)
                return false;
        } else if (ch == ']' || ch == '}') {
            depth--;
        }
    }
    return true;
}

static cJSON *parse_bounded(const char *json, size_t len)
{
    if (!json || len == 0 || json_has_escaped_nul(json, len) || !json_nesting_is_bounded(json, len))
        return NULL;
    return cJSON_ParseWithLengthOpts(json, len, NULL, false);
}

bool hub_parse_repo_info_sha(const char *json, size_t len, char sha_out[HUB_SHA_HEX_LEN + 1])
{
    cJSON *root = parse_bounded(json, len);
    if (!root)
        return false;
    const cJSON *sha = cJSON_GetObjectItemCaseSensitive(root, "sha");
    bool ok = cJSON_IsObject(root) && cJSON_IsString(sha) &&
              hub_is_hex(sha->valuestring, HUB_SHA_HEX_LEN);
    if (ok)
        copy_lower_hex(sha_out, sha->valuestring, HUB_SHA_HEX_LEN);
    cJSON_Delete(root);
    return ok;
}

/* A JSON number that is a whole byte count a double represents exactly. */
static bool json_size(const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item))
        return false;
    double v = item->valuedouble;
    if (!(v >= 0 && v < JSON_SAFE_INTEGER) || v != (double)(uint64_t)v)
        return false;
    *out = (uint64_t)v;
    return true;
}

static void describe_entry(char *why, size_t why_cap, size_t index, const cJSON *path,
                           const char *problem)
{
    if (cJSON_IsString(path)) {
        char shown[120];
        size_t n = 0;
        for (const char *p = path->valuestring; *p && n + 1 < sizeof shown; p++)
            shown[n++] = isprint((unsigned char)*p) ? *p : '?';
        shown[n] = '\0';
        snprintf(why, why_cap, "tree entry %zu (\"%s%s\"): %s", index, shown,
                 strlen(path->valuestring) > n ? "..." : "", problem);
    } else {
        snprintf(why, why_cap, "tree entry %zu: %s", index, problem);
    }
}

static const char *fill_lfs(const cJSON *lfs, hub_tree_entry *entry)
{
    if (!lfs || cJSON_IsNull(lfs))
        return NULL;
    const cJSON *oid = cJSON_GetObjectItemCaseSensitive(lfs, "oid");
    const cJSON *size = cJSON_GetObjectItemCaseSensitive(lfs, "size");
    if (!cJSON_IsObject(lfs) || !cJSON_IsString(oid) || !hub_is_hex(oid->valuestring, 64))
        return "lfs.oid is not a 64-hex sha256";
    uint64_t lfs_size;
    if (!json_size(size, &lfs_size))
        return "lfs.size is not a byte count";
    entry->is_lfs = true;
    entry->size = lfs_size;
    copy_lower_hex(entry->lfs_sha256, oid->valuestring, 64);
    return NULL;
}

/* Fills entry from item, or returns what is wrong with it. */
static const char *fill_entry(const cJSON *item, hub_tree_entry *entry)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(item, "type");
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(item, "path");
    const cJSON *oid = cJSON_GetObjectItemCaseSensitive(item, "oid");
    const cJSON *size = cJSON_GetObjectItemCaseSensitive(item, "size");
    if (!cJSON_IsObject(item))
        return "not an object";
    if (!cJSON_IsString(type) ||
        (strcmp(type->valuestring, "file") != 0 && strcmp(type->valuestring, "directory") != 0))
        return "type is neither \"file\" nor \"directory\"";
    if (!cJSON_IsString(path) || !hub_path_is_valid(path->valuestring, strlen(path->valuestring)))
        return "path is not a safe relative path";
    if (!cJSON_IsString(oid) || !hub_is_hex(oid->valuestring, HUB_SHA_HEX_LEN))
        return "oid is not a 40-hex sha1";
    entry->is_directory = type->valuestring[0] == 'd';
    copy_lower_hex(entry->oid, oid->valuestring, HUB_SHA_HEX_LEN);
    if (!entry->is_directory) {
        if (!json_size(size, &entry->size))
            return "size is not a byte count";
        const char *lfs_problem = fill_lfs(cJSON_GetObjectItemCaseSensitive(item, "lfs"), entry);
        if (lfs_problem)
            return lfs_problem;
    }
    entry->path = strdup(path->valuestring);
    return entry->path ? NULL : "out of memory";
}

static bool reserve_entries(hub_tree *tree, size_t *capacity, size_t wanted)
{
    if (wanted <= *capacity)
        return true;
    size_t new_capacity = *capacity ? *capacity : 64;
    while (new_capacity < wanted)
        new_capacity *= 2;
    hub_tree_entry *grown = realloc(tree->entries, new_capacity * sizeof *grown);
    if (!grown)
        return false;
    tree->entries = grown;
    *capacity = new_capacity;
    return true;
}

hub_status hub_parse_tree_page(const char *json, size_t len, hub_tree *tree, size_t *capacity,
                               size_t max_entries, char *why, size_t why_cap)
{
    cJSON *root = parse_bounded(json, len);
    if (!cJSON_IsArray(root)) {
        snprintf(why, why_cap, "tree page is not a JSON array");
        cJSON_Delete(root);
        return HUB_ERR_PROTOCOL;
    }
    size_t page_count = (size_t)cJSON_GetArraySize(root);
    hub_status status = HUB_OK;
    if (page_count > max_entries || tree->count > max_entries - page_count) {
        snprintf(why, why_cap, "tree has more than %zu entries", max_entries);
        status = HUB_ERR_PROTOCOL;
    } else if (!reserve_entries(tree, capacity, tree->count + page_count)) {
        snprintf(why, why_cap, "out of memory for %zu tree entries", tree->count + page_count);
        status = HUB_ERR_NO_MEMORY;
    }
    const cJSON *item;
    cJSON_ArrayForEach(item, root)
    {
        if (status != HUB_OK)
            break;
        memset(&tree->entries[tree->count], 0, sizeof tree->entries[tree->count]);
        const char *problem = fill_entry(item, &tree->entries[tree->count]);
        if (problem) {
            free(tree->entries[tree->count].path);
            describe_entry(why, why_cap, tree->count, cJSON_GetObjectItemCaseSensitive(item, "path"),
                           problem);
            status = strcmp(problem, "out of memory") == 0 ? HUB_ERR_NO_MEMORY : HUB_ERR_PROTOCOL;
            break;
        }
        tree->count++;
    }
    cJSON_Delete(root);
    return status;
}

static void copy_printable(char *out, size_t out_cap, const char *text)
{
    size_t n = 0;
    for (const char *p = text; *p && n + 1 < out_cap; p++)
        out[n++] = (*p >= 0x20 && *p < 0x7f) ? *p : ' ';
    out[n] = '\0';
}

bool hub_parse_error_body(const char *json, size_t len, char *out, size_t out_cap)
{
    if (out_cap == 0)
        return false;
    cJSON *root = parse_bounded(json, len);
    const cJSON *error = cJSON_GetObjectItemCaseSensitive(root, "error");
    if (cJSON_IsArray(error))
        error = cJSON_GetArrayItem(error, 0);
    bool found = cJSON_IsObject(root) && cJSON_IsString(error) && error->valuestring[0];
    if (found)
        copy_printable(out, out_cap, error->valuestring);
    cJSON_Delete(root);
    return found;
}
