/* parse.h — pure, bounded parsers of what the Hub sends (JSON bodies, header values, URLs).
 * Private to hub/; no I/O, no globals, so unit tests and fuzzers link them directly. Every
 * function accepts arbitrary input and fails cleanly on anything malformed.
 */
#ifndef HUBFS_HUB_PARSE_H
#define HUBFS_HUB_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "hub.h"

#define HUB_PATH_MAX 4096        /* longest repo-relative path accepted */
#define HUB_NAME_MAX 255         /* longest path component (what a filesystem can show) */

/* ---- validation (parse_json.c) ---- */

/* n lowercase or uppercase hex digits and nothing else. */
bool hub_is_hex(const char *s, size_t n);
/* A repo-relative path: no leading '/', no "", "." or ".." components, no control characters
 * (NUL included), at most HUB_PATH_MAX bytes and HUB_NAME_MAX per component. */
bool hub_path_is_valid(const char *path, size_t len);
/* What makes path invalid, in a few words ("a control character", ...), or NULL when valid. */
const char *hub_path_problem(const char *path, size_t len);
/* "name" or "org/name" with [A-Za-z0-9._-] parts, no "..", at most 200 bytes. */
bool hub_repo_id_is_valid(const char *id);

/* ---- JSON checked and walked without building a tree (json_scan.c) ---- */

#define HUB_JSON_NESTING_MAX 64          /* our answers are 3 levels deep */

typedef struct hub_json_span {
    const char *start;
    size_t len;
} hub_json_span;

/* Called with each item of a container: key is the member's raw "name" (len 0 in an array),
 * value the raw text of its value. Returns false to stop. */
typedef bool (*hub_json_visit)(void *ctx, hub_json_span key, hub_json_span value);

/* Whether json is exactly one RFC 8259 JSON text nested at most HUB_JSON_NESTING_MAX deep. */
bool hub_json_is_valid(const char *json, size_t len);
/* Checks json as above, then calls visit for each item of its top level, which must be an array
 * (kind '[') or an object ('{'). False when json is invalid or of another kind. */
bool hub_json_each_item(const char *json, size_t len, char kind, hub_json_visit visit, void *ctx);
/* Whether the (valid) JSON text of span holds a \u0000 escape. */
bool hub_json_span_has_escaped_nul(hub_json_span span);

/* ---- JSON bodies (parse_json.c) ---- */

/* The 40-hex "sha" of a repo-info answer, lowercased into sha_out. */
bool hub_parse_repo_info_sha(const char *json, size_t len, char sha_out[HUB_SHA_HEX_LEN + 1]);

/* The "lastModified" of a repo-info answer (the date of the commit asked for) in Unix seconds;
 * false when absent or not an ISO 8601 UTC date. */
bool hub_parse_repo_info_date(const char *json, size_t len, int64_t *seconds_out);

/* "2023-07-18T16:21:35.000Z" (any fraction, or none; 'Z' required; years 1970-9999) as Unix
 * seconds; false for anything else. */
bool hub_parse_iso8601_utc(const char *text, size_t len, int64_t *seconds_out);

#define HUB_LIST_ITEM_JSON_MAX 65536   /* one repo of a listing page; the Hub sends under 1 KiB */

/* A listing of an author's repos being read, page after page (GET /api/models?author=...).
 * Zero it, then set list, author and max_names. */
typedef struct hub_repo_list_builder {
    hub_repo_list *list;
    const char *author;
    size_t max_names;            /* past it the rest is dropped and cut set */
    size_t skipped;              /* items that were not AUTHOR/NAME with a valid NAME */
    bool cut;
} hub_repo_list_builder;

/* Appends the NAME of each item {"id": "AUTHOR/NAME", ...} of one listing page (a JSON array)
 * to the builder's list. AUTHOR compares without case, as the Hub's names do; an item that is
 * not such an object, or whose NAME is no valid repo name, is left out and counted. Fails only
 * on a page that is not a JSON array, or without memory. */
hub_status hub_parse_repo_list_page(const char *json, size_t len, hub_repo_list_builder *builder,
                                    char *why, size_t why_cap);

#define HUB_TREE_ITEM_JSON_MAX 65536   /* one tree entry's JSON; a 4096-byte path fits escaped */

/* A tree listing being read, page after page. Zero it, then set tree and the two limits. */
typedef struct hub_tree_builder {
    hub_tree *tree;
    size_t capacity;             /* entries allocated */
    size_t seen;                 /* entries read so far, kept or not: numbers them in messages */
    size_t path_bytes;           /* bytes of the kept paths, their NULs included */
    size_t max_entries;          /* past either limit the listing is cut: tree->truncated says so */
    size_t max_path_bytes;
} hub_tree_builder;

/* Appends the entries of one tree page (a JSON array) to the builder's tree. An entry whose
 * path no filesystem can show (hub_path_problem) is left out and counted in tree->skipped; past
 * a limit the rest is left out and tree->truncated says why (the caller stops paging). Fails,
 * naming the offending entry in why, on a page that is not valid JSON or an entry that is
 * malformed otherwise. On failure the entries already appended stay (the caller frees them). */
hub_status hub_parse_tree_page(const char *json, size_t len, hub_tree_builder *builder, char *why,
                               size_t why_cap);

/* The Hub's error text from a JSON error body ({"error": "..."}), sanitized to printable
 * ASCII and at most out_cap-1 bytes; false when there is none. */
bool hub_parse_error_body(const char *json, size_t len, char *out, size_t out_cap);

/* ---- header values (parse_headers.c) ---- */

/* A decimal unsigned integer with optional surrounding blanks; rejects overflow and signs. */
bool hub_parse_uint64(const char *s, uint64_t *out);

/* The URL of the rel="next" link of a Link header value, malloc'd into *url_out. */
bool hub_parse_link_next(const char *value, char **url_out);

typedef struct hub_content_range {
    bool satisfied;              /* false for "bytes * / size" (a 416's answer) */
    uint64_t first, last;        /* inclusive, when satisfied */
    bool size_known;             /* false for "/ *" */
    uint64_t size;
} hub_content_range;

bool hub_parse_content_range(const char *value, hub_content_range *out);

/* Seconds to wait from now for a Retry-After value: delta-seconds, or an HTTP date (RFC 9110
 * IMF-fixdate, or the obsolete RFC 850 and asctime forms), 0 for a date already past; at most
 * 86400; -1 when absent or malformed. */
long hub_parse_retry_after_s(const char *value, time_t now);
/* The reset time t of a RateLimit value such as "api";r=0;t=89, -1 when absent. */
long hub_parse_ratelimit_reset_s(const char *value);

/* An ETag without W/ and quotes into out (at most out_cap-1 bytes); false when empty or too
 * long. */
bool hub_parse_etag(const char *value, char *out, size_t out_cap);

/* ---- URLs (url.c) ---- */

typedef struct hub_origin {
    char scheme[8];              /* "http" or "https" */
    char host[256];              /* lowercased */
    unsigned port;               /* explicit or the scheme's default */
} hub_origin;

/* The origin of an absolute http(s) URL; false for any other scheme or a malformed URL. */
bool hub_url_origin(const char *url, hub_origin *out);
bool hub_same_origin(const hub_origin *a, const hub_origin *b);

/* The absolute URL a Location header points to, relative to base: absolute http(s) URLs as
 * they are, "//host/..." with base's scheme, "/path" on base's origin, "path" next to base's
 * last segment. NULL when invalid or not http(s). malloc'd. */
char *hub_url_resolve(const char *base, const char *location);

/* Percent-encodes everything but RFC 3986 unreserved characters (and '/' when keep_slash).
 * malloc'd; NULL on allocation failure. */
char *hub_url_encode(const char *s, bool keep_slash);

/* When a signed CDN URL stops working: Expires=<unix time>, or X-Amz-Date=YYYYMMDDTHHMMSSZ plus
 * X-Amz-Expires=<seconds>. False when the URL says nothing (the caller assumes an hour). */
bool hub_url_expiry(const char *url, time_t *expiry);

#endif
