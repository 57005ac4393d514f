/* parse_json.c — repo-info and tree-page JSON, error bodies, and the path/id validators.
 * Bodies are checked whole by json_scan.c, then only small items go through cJSON. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "parse.h"

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

/* The problem of one path component of n bytes, or NULL. */
static const char *component_problem(const char *c, size_t n)
{
    if (n == 0)
        return "an empty part (\"//\", or a '/' at an end)";
    if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
        return "a \".\" or \"..\" part";
    if (n > HUB_NAME_MAX)
        return "a name longer than 255 bytes";
    return NULL;
}

const char *hub_path_problem(const char *path, size_t len)
{
    if (!path || len == 0)
        return "an empty path";
    if (len > HUB_PATH_MAX)
        return "a path longer than 4096 bytes";
    if (path[0] == '/')
        return "an absolute path";
    size_t component_start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && ((unsigned char)path[i] < 0x20 || path[i] == 0x7f))
            return "a control character such as a newline";
        if (i == len || path[i] == '/') {
            const char *problem = component_problem(path + component_start, i - component_start);
            if (problem)
                return problem;
            component_start = i + 1;
        }
    }
    return NULL;
}

bool hub_path_is_valid(const char *path, size_t len)
{
    return hub_path_problem(path, len) == NULL;
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

/* cJSON of one valid JSON span. cJSON turns "\u0000" into a NUL that silently shortens the
 * string, and a path shortened that way would name another file: such escapes are read as
 * \u0001, a control character that every check here refuses. */
static cJSON *parse_span(hub_json_span span)
{
    if (!hub_json_span_has_escaped_nul(span))
        return cJSON_ParseWithLengthOpts(span.start, span.len, NULL, false);
    char *copy = malloc(span.len);
    if (!copy)
        return NULL;
    memcpy(copy, span.start, span.len);
    for (size_t i = 0; i + 5 < span.len; i++) {
        if (copy[i] != '\\')
            continue;
        if (memcmp(copy + i + 1, "u0000", 5) == 0)
            copy[i + 5] = '1';
        i++;
    }
    cJSON *parsed = cJSON_ParseWithLengthOpts(copy, span.len, NULL, false);
    free(copy);
    return parsed;
}

/* Whether the raw JSON string key (quotes included) says name. */
static bool key_is(hub_json_span key, const char *name)
{
    size_t n = strlen(name);
    if (!memchr(key.start, '\\', key.len))
        return key.len == n + 2 && memcmp(key.start + 1, name, n) == 0;
    cJSON *decoded = parse_span(key);
    bool same = cJSON_IsString(decoded) && strcmp(decoded->valuestring, name) == 0;
    cJSON_Delete(decoded);
    return same;
}

/* The first member called name of a top-level object, as its raw value. */
typedef struct member_search {
    const char *name;
    hub_json_span value;
    bool found;
} member_search;

static bool visit_member(void *ctx, hub_json_span key, hub_json_span value)
{
    member_search *search = ctx;
    if (!key_is(key, search->name))
        return true;
    search->value = value;
    search->found = true;
    return false;
}

static bool find_member(const char *json, size_t len, const char *name, hub_json_span *value)
{
    member_search search = {.name = name};
    if (!hub_json_each_item(json, len, '{', visit_member, &search) || !search.found)
        return false;
    *value = search.value;
    return true;
}

/* A JSON string value, decoded (malloc'd by cJSON: free with cJSON_Delete of *holder). Only
 * strings are parsed: their tree is one node, never many times the text. */
static const char *string_value(hub_json_span value, cJSON **holder)
{
    *holder = NULL;
    if (value.len == 0 || value.start[0] != '"')
        return NULL;
    *holder = parse_span(value);
    return cJSON_IsString(*holder) ? (*holder)->valuestring : NULL;
}

bool hub_parse_repo_info_sha(const char *json, size_t len, char sha_out[HUB_SHA_HEX_LEN + 1])
{
    hub_json_span value;
    if (!find_member(json, len, "sha", &value))
        return false;
    cJSON *holder;
    const char *sha = string_value(value, &holder);
    bool ok = sha && hub_is_hex(sha, HUB_SHA_HEX_LEN);
    if (ok)
        copy_lower_hex(sha_out, sha, HUB_SHA_HEX_LEN);
    cJSON_Delete(holder);
    return ok;
}

/* n decimal digits at text into *out. */
static bool fixed_digits(const char *text, int n, int *out)
{
    int value = 0;
    for (int i = 0; i < n; i++) {
        if (text[i] < '0' || text[i] > '9')
            return false;
        value = value * 10 + (text[i] - '0');
    }
    *out = value;
    return true;
}

/* Days from 1970-01-01 to a proleptic Gregorian date (month 1-12), as in H. Hinnant's
 * days_from_civil: no time zone, no table. */
static int64_t days_from_civil(int64_t year, int month, int day)
{
    year -= month <= 2;
    int64_t era = year / 400;
    int64_t year_of_era = year - era * 400;
    int64_t day_of_year = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + day_of_era - 719468;
}

static int days_in_month(int year, int month)
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return days[month - 1] + (month == 2 && leap);
}

bool hub_parse_iso8601_utc(const char *text, size_t len, int64_t *seconds_out)
{
    int year, month, day, hour, minute, second;
    if (!text || len < 20 || !fixed_digits(text, 4, &year) || text[4] != '-' ||
        !fixed_digits(text + 5, 2, &month) || text[7] != '-' || !fixed_digits(text + 8, 2, &day) ||
        text[10] != 'T' || !fixed_digits(text + 11, 2, &hour) || text[13] != ':' ||
        !fixed_digits(text + 14, 2, &minute) || text[16] != ':' || !fixed_digits(text + 17, 2, &second))
        return false;
    size_t i = 19;
    if (text[i] == '.') {
        size_t fraction_start = ++i;
        while (i < len && text[i] >= '0' && text[i] <= '9')
            i++;
        if (i == fraction_start)
            return false;
    }
    if (i + 1 != len || text[i] != 'Z' || year < 1970 || month < 1 || month > 12 || day < 1 ||
        day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 60)
        return false;
    *seconds_out = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second;
    return true;
}

bool hub_parse_repo_info_date(const char *json, size_t len, int64_t *seconds_out)
{
    hub_json_span value;
    if (!find_member(json, len, "lastModified", &value))
        return false;
    cJSON *holder;
    const char *date = string_value(value, &holder);
    bool ok = date && hub_parse_iso8601_utc(date, strlen(date), seconds_out);
    cJSON_Delete(holder);
    return ok;
}

/* A repo name as the Hub allows it (huggingface_hub's validate_repo_id): a valid id part that
 * starts and ends with a letter, digit or '_' and holds no "--" or "..". */
static bool is_strict_repo_name(const char *name)
{
    size_t n = strlen(name);
    return repo_id_part_is_valid(name, n) && name[0] != '-' && name[0] != '.' && name[n - 1] != '-' &&
           name[n - 1] != '.' && !strstr(name, "--") && !strstr(name, "..");
}

/* The NAME of "AUTHOR/NAME" when the id is one of author's repos with a valid NAME, else NULL. */
static const char *name_of_author_repo(const char *id, const char *author)
{
    size_t author_len = strlen(author);
    if (strncasecmp(id, author, author_len) != 0 || id[author_len] != '/')
        return NULL;
    const char *name = id + author_len + 1;
    return is_strict_repo_name(name) ? name : NULL;
}

bool hub_repo_list_add(hub_repo_list *list, const char *name)
{
    if (list->count == list->capacity) {
        size_t wanted = list->capacity ? list->capacity * 2 : 64;
        char **grown = realloc(list->names, wanted * sizeof *grown);
        if (!grown)
            return false;
        list->names = grown;
        list->capacity = wanted;
    }
    char *copy = strdup(name);
    if (copy)
        list->names[list->count++] = copy;
    return copy != NULL;
}

static bool keep_listed_name(hub_repo_list_builder *b, const char *name)
{
    if (b->list->count < b->max_names)
        return hub_repo_list_add(b->list, name);
    b->cut = true;
    return true;
}

typedef struct list_reader {
    hub_repo_list_builder *builder;
    bool out_of_memory;
} list_reader;

static bool visit_listed_repo(void *ctx, hub_json_span key, hub_json_span item)
{
    (void)key;
    list_reader *reader = ctx;
    hub_repo_list_builder *b = reader->builder;
    hub_json_span id_span;
    cJSON *holder = NULL;
    const char *id = item.len <= HUB_LIST_ITEM_JSON_MAX && item.start[0] == '{' &&
                             find_member(item.start, item.len, "id", &id_span)
                         ? string_value(id_span, &holder)
                         : NULL;
    const char *name = id ? name_of_author_repo(id, b->author) : NULL;
    if (!name)
        b->skipped++;
    else if (!keep_listed_name(b, name))
        reader->out_of_memory = true;
    cJSON_Delete(holder);
    return !reader->out_of_memory && !b->cut;
}

void hub_repo_list_free(hub_repo_list *list)
{
    if (!list)
        return;
    for (size_t i = 0; i < list->count; i++)
        free(list->names[i]);
    free(list->names);
    memset(list, 0, sizeof *list);
}

hub_status hub_parse_repo_list_page(const char *json, size_t len, hub_repo_list_builder *builder,
                                    char *why, size_t why_cap)
{
    list_reader reader = {.builder = builder};
    if (builder->cut)
        return HUB_OK;
    if (!hub_json_each_item(json, len, '[', visit_listed_repo, &reader)) {
        snprintf(why, why_cap, "%s", hub_json_is_valid(json, len)
                                         ? "the repo listing is not a JSON array"
                                         : "the repo listing is not valid JSON (or nested too deep)");
        return HUB_ERR_PROTOCOL;
    }
    if (reader.out_of_memory) {
        snprintf(why, why_cap, "out of memory for %zu repo names", builder->list->count + 1);
        return HUB_ERR_NO_MEMORY;
    }
    return HUB_OK;
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

/* path for a message: printable ASCII (anything else as '?'), cut at 48 bytes with "...". */
static void show_path(char *out, size_t out_cap, const char *path)
{
    size_t n = 0;
    const char *p = path;
    for (; *p && n < 48 && n + 4 < out_cap; p++)
        out[n++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
    snprintf(out + n, out_cap - n, "%s", *p ? "..." : "");
}

static void describe_entry(char *why, size_t why_cap, size_t index, const cJSON *path,
                           const char *problem)
{
    char shown[64];
    if (cJSON_IsString(path)) {
        show_path(shown, sizeof shown, path->valuestring);
        snprintf(why, why_cap, "tree entry %zu (\"%s\"): %s", index, shown, problem);
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

/* Fills entry from item but its path (which must be a string), or says what is malformed. */
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
    if (!cJSON_IsString(path))
        return "path is not a string";
    if (!cJSON_IsString(oid) || !hub_is_hex(oid->valuestring, HUB_SHA_HEX_LEN))
        return "oid is not a 40-hex sha1";
    entry->is_directory = type->valuestring[0] == 'd';
    copy_lower_hex(entry->oid, oid->valuestring, HUB_SHA_HEX_LEN);
    if (entry->is_directory)
        return NULL;
    if (!json_size(size, &entry->size))
        return "size is not a byte count";
    return fill_lfs(cJSON_GetObjectItemCaseSensitive(item, "lfs"), entry);
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

#define SKIPPED_SHOWN_COUNT 3

/* Counts an entry left out; the first few are described in tree->skipped_shown. */
static void note_skipped(hub_tree *tree, const char *path, const char *reason)
{
    if (++tree->skipped > SKIPPED_SHOWN_COUNT)
        return;
    char shown[64], example[160];
    if (path) {
        show_path(shown, sizeof shown, path);
        snprintf(example, sizeof example, "\"%s\" (%s)", shown, reason);
    } else {
        snprintf(example, sizeof example, "an entry (%s)", reason);
    }
    size_t used = strlen(tree->skipped_shown);
    const char *separator = used ? "; " : "";
    if (used + strlen(separator) + strlen(example) < sizeof tree->skipped_shown)
        snprintf(tree->skipped_shown + used, sizeof tree->skipped_shown - used, "%s%s", separator,
                 example);
}

static int hex4(const char *p)
{
    int value = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        value = value * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return value;
}

/* Whether the (valid) JSON span holds a \uD800-\uDFFF escape that is not half of a pair:
 * cJSON refuses those. */
static bool span_has_lone_surrogate(hub_json_span span)
{
    bool low_expected = false;
    for (size_t i = 0; i < span.len; i++) {
        bool escape = span.start[i] == '\\';
        int code = escape && i + 5 < span.len && span.start[i + 1] == 'u'
                       ? hex4(span.start + i + 2) : -1;
        bool high = code >= 0xD800 && code <= 0xDBFF, low = code >= 0xDC00 && code <= 0xDFFF;
        if (low_expected != low)
            return true;
        low_expected = high;
        if (escape)
            i += code >= 0 ? 5 : 1;
    }
    return low_expected;
}

typedef struct page_reader {
    hub_tree_builder *builder;
    hub_status status;
    char *why;
    size_t why_cap;
} page_reader;

/* Keeps the entry of item, leaves it out, or cuts the listing there. */
static hub_status take_entry(page_reader *reader, cJSON *item)
{
    hub_tree_builder *b = reader->builder;
    hub_tree *tree = b->tree;
    hub_tree_entry entry = {0};
    const char *malformed = fill_entry(item, &entry);
    cJSON *path = cJSON_GetObjectItemCaseSensitive(item, "path");
    if (malformed) {
        describe_entry(reader->why, reader->why_cap, b->seen, path, malformed);
        return HUB_ERR_PROTOCOL;
    }
    size_t path_len = strlen(path->valuestring);
    const char *unshowable = hub_path_problem(path->valuestring, path_len);
    if (unshowable) {
        note_skipped(tree, path->valuestring, unshowable);
        return HUB_OK;
    }
    if (tree->count >= b->max_entries) {
        snprintf(tree->truncated, sizeof tree->truncated, "more than %zu entries", b->max_entries);
        return HUB_OK;
    }
    if (path_len + 1 > b->max_path_bytes - b->path_bytes) {
        snprintf(tree->truncated, sizeof tree->truncated, "more than %zu MiB of paths",
                 b->max_path_bytes >> 20);
        return HUB_OK;
    }
    if (!reserve_entries(tree, &b->capacity, tree->count + 1)) {
        snprintf(reader->why, reader->why_cap, "out of memory for %zu tree entries",
                 tree->count + 1);
        return HUB_ERR_NO_MEMORY;
    }
    entry.path = path->valuestring;   /* taken over from cJSON (plain malloc): no copy */
    path->valuestring = NULL;
    b->path_bytes += path_len + 1;
    tree->entries[tree->count++] = entry;
    return HUB_OK;
}

static hub_status take_tree_item(page_reader *reader, hub_json_span value)
{
    hub_tree *tree = reader->builder->tree;
    if (value.len > HUB_TREE_ITEM_JSON_MAX) {
        note_skipped(tree, NULL, "more than 64 KiB of JSON");
        return HUB_OK;
    }
    cJSON *item = parse_span(value);
    if (!item && span_has_lone_surrogate(value)) {
        note_skipped(tree, NULL, "a \\u escape that is half a UTF-16 pair");
        return HUB_OK;
    }
    if (!item) {
        snprintf(reader->why, reader->why_cap, "out of memory reading tree entry %zu",
                 reader->builder->seen);
        return HUB_ERR_NO_MEMORY;
    }
    hub_status status = take_entry(reader, item);
    cJSON_Delete(item);
    return status;
}

static bool visit_tree_item(void *ctx, hub_json_span key, hub_json_span value)
{
    (void)key;
    page_reader *reader = ctx;
    reader->status = take_tree_item(reader, value);
    reader->builder->seen++;
    return reader->status == HUB_OK && !reader->builder->tree->truncated[0];
}

hub_status hub_parse_tree_page(const char *json, size_t len, hub_tree_builder *builder, char *why,
                               size_t why_cap)
{
    if (builder->tree->truncated[0])
        return HUB_OK;                    /* already cut: nothing more is kept */
    page_reader reader = {.builder = builder, .status = HUB_OK, .why = why, .why_cap = why_cap};
    if (!hub_json_each_item(json, len, '[', visit_tree_item, &reader)) {
        snprintf(why, why_cap, "%s", hub_json_is_valid(json, len)
                                         ? "tree page is not a JSON array"
                                         : "tree page is not valid JSON (or nested too deep)");
        return HUB_ERR_PROTOCOL;
    }
    return reader.status;
}

static void copy_printable(char *out, size_t out_cap, const char *text)
{
    size_t n = 0;
    for (const char *p = text; *p && n + 1 < out_cap; p++)
        out[n++] = (*p >= 0x20 && *p < 0x7f) ? *p : ' ';
    out[n] = '\0';
}

static bool visit_first(void *ctx, hub_json_span key, hub_json_span value)
{
    (void)key;
    *(hub_json_span *)ctx = value;
    return false;
}

bool hub_parse_error_body(const char *json, size_t len, char *out, size_t out_cap)
{
    hub_json_span error;
    if (out_cap == 0 || !find_member(json, len, "error", &error))
        return false;
    if (error.start[0] == '[') {          /* a list of messages: the first one */
        hub_json_span list = error;
        error.len = 0;
        hub_json_each_item(list.start, list.len, '[', visit_first, &error);
    }
    cJSON *holder;
    const char *text = string_value(error, &holder);
    bool found = text && text[0];
    if (found)
        copy_printable(out, out_cap, text);
    cJSON_Delete(holder);
    return found;
}
