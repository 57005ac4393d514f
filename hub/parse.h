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
/* "name" or "org/name" with [A-Za-z0-9._-] parts, no "..", at most 200 bytes. */
bool hub_repo_id_is_valid(const char *id);

/* ---- JSON bodies (parse_json.c) ---- */

/* The 40-hex "sha" of a repo-info answer, lowercased into sha_out. */
bool hub_parse_repo_info_sha(const char *json, size_t len, char sha_out[HUB_SHA_HEX_LEN + 1]);

/* Appends the entries of one tree page (a JSON array) to tree, growing tree->entries
 * (*capacity tracks the allocation). Fails, naming the offending entry in why, on anything
 * malformed or when the total would pass max_entries. On failure the entries already
 * appended stay (the caller frees the tree). */
hub_status hub_parse_tree_page(const char *json, size_t len, hub_tree *tree, size_t *capacity,
                               size_t max_entries, char *why, size_t why_cap);

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

/* Seconds of a Retry-After value (delta-seconds only), -1 when absent or not a number. */
long hub_parse_retry_after_s(const char *value);
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
