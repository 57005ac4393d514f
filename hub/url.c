/* url.c — origins, Location resolution, percent-encoding, signed-URL expiry. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "parse.h"

#define URL_MAX 65536   /* longer Location or Link URLs are refused */

/* Length of a "http:" / "https:" scheme prefix (without "//"), 0 for anything else. */
static size_t http_scheme_len(const char *url)
{
    if (strncasecmp(url, "https:", 6) == 0)
        return 5;
    if (strncasecmp(url, "http:", 5) == 0)
        return 4;
    return 0;
}

/* Whether url starts with some "scheme:" (letters, digits, + - . then ':'). */
static bool has_scheme(const char *url)
{
    if (!isalpha((unsigned char)url[0]))
        return false;
    for (const char *p = url + 1; *p; p++) {
        if (*p == ':')
            return true;
        if (!isalnum((unsigned char)*p) && *p != '+' && *p != '-' && *p != '.')
            return false;
    }
    return false;
}

static size_t authority_len(const char *authority)
{
    return strcspn(authority, "/?#");
}

static bool parse_port(const char *s, size_t n, unsigned *port)
{
    if (n == 0 || n > 5)
        return false;
    unsigned value = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        value = value * 10 + (unsigned)(s[i] - '0');
    }
    if (value == 0 || value > 65535)
        return false;
    *port = value;
    return true;
}

static bool host_char_ok(char ch, bool bracketed)
{
    if (bracketed)
        return isxdigit((unsigned char)ch) || ch == ':' || ch == '.';
    return isalnum((unsigned char)ch) || ch == '-' || ch == '.' || ch == '_';
}

bool hub_url_origin(const char *url, hub_origin *out)
{
    if (!url)
        return false;
    size_t scheme_len = http_scheme_len(url);
    if (scheme_len == 0 || strncmp(url + scheme_len, "://", 3) != 0)
        return false;
    hub_origin origin = {0};
    for (size_t i = 0; i < scheme_len; i++)
        origin.scheme[i] = (char)tolower((unsigned char)url[i]);
    origin.port = scheme_len == 5 ? 443 : 80;

    const char *authority = url + scheme_len + 3;
    size_t n = authority_len(authority);
    if (memchr(authority, '@', n))
        return false;                     /* userinfo has no business in Hub URLs */
    size_t host_start = 0, host_end;
    bool bracketed = n > 0 && authority[0] == '[';
    if (bracketed) {
        const char *close = memchr(authority, ']', n);
        if (!close)
            return false;
        host_start = 1;
        host_end = (size_t)(close - authority);
    } else {
        const char *colon = memchr(authority, ':', n);
        host_end = colon ? (size_t)(colon - authority) : n;
    }
    size_t after_host = host_end + (bracketed ? 1 : 0);
    if (after_host < n) {
        if (authority[after_host] != ':' ||
            !parse_port(authority + after_host + 1, n - after_host - 1, &origin.port))
            return false;
    }
    size_t host_len = host_end - host_start;
    if (host_len == 0 || host_len >= sizeof origin.host)
        return false;
    for (size_t i = 0; i < host_len; i++) {
        char ch = authority[host_start + i];
        if (!host_char_ok(ch, bracketed))
            return false;
        origin.host[i] = (char)tolower((unsigned char)ch);
    }
    *out = origin;
    return true;
}

bool hub_same_origin(const hub_origin *a, const hub_origin *b)
{
    return strcmp(a->scheme, b->scheme) == 0 && strcmp(a->host, b->host) == 0 &&
           a->port == b->port;
}

static char *concat(const char *a, size_t a_len, const char *b)
{
    size_t b_len = strlen(b);
    char *joined = malloc(a_len + b_len + 1);
    if (!joined)
        return NULL;
    memcpy(joined, a, a_len);
    memcpy(joined + a_len, b, b_len + 1);
    return joined;
}

static char *checked_absolute(char *url)
{
    hub_origin origin;
    if (url && !hub_url_origin(url, &origin)) {
        free(url);
        return NULL;
    }
    return url;
}

char *hub_url_resolve(const char *base, const char *location)
{
    hub_origin base_origin;
    if (!base || !location || !hub_url_origin(base, &base_origin))
        return NULL;
    size_t loc_len = strnlen(location, URL_MAX + 1);
    if (loc_len == 0 || loc_len > URL_MAX)
        return NULL;
    for (size_t i = 0; i < loc_len; i++)
        if ((unsigned char)location[i] <= 0x20 || location[i] == 0x7f)
            return NULL;                  /* a Location must be one clean token */

    if (has_scheme(location))
        return http_scheme_len(location) ? checked_absolute(strdup(location)) : NULL;

    size_t scheme_len = http_scheme_len(base);
    if (location[0] == '/' && location[1] == '/')
        return checked_absolute(concat(base, scheme_len + 1, location));

    const char *authority = base + scheme_len + 3;
    size_t origin_len = scheme_len + 3 + authority_len(authority);
    if (location[0] == '/')
        return concat(base, origin_len, location);

    size_t path_end = origin_len + strcspn(base + origin_len, "?#");
    if (location[0] == '?')
        return concat(base, path_end, location);
    size_t dir_end = path_end;
    while (dir_end > origin_len && base[dir_end - 1] != '/')
        dir_end--;
    if (dir_end == origin_len) {          /* base has no path: the location sits at the root */
        char *rooted = concat(base, origin_len, "/");
        char *joined = rooted ? concat(rooted, origin_len + 1, location) : NULL;
        free(rooted);
        return joined;
    }
    return concat(base, dir_end, location);
}

char *hub_url_encode(const char *s, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t len = strlen(s);
    if (len > (SIZE_MAX - 1) / 3)
        return NULL;
    char *out = malloc(len * 3 + 1), *w = out;
    if (!out)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~' ||
            (keep_slash && *p == '/')) {
            *w++ = (char)*p;
        } else {
            *w++ = '%';
            *w++ = hex[*p >> 4];
            *w++ = hex[*p & 15];
        }
    }
    *w = '\0';
    return out;
}

/* The value of query parameter name (exact, case-sensitive) in url, into out. */
static bool query_param(const char *url, const char *name, char *out, size_t out_cap)
{
    const char *query = strchr(url, '?');
    if (!query)
        return false;
    size_t name_len = strlen(name);
    for (const char *p = query + 1; *p;) {
        size_t item_len = strcspn(p, "&#");
        if (item_len > name_len && strncmp(p, name, name_len) == 0 && p[name_len] == '=') {
            size_t value_len = item_len - name_len - 1;
            if (value_len == 0 || value_len >= out_cap)
                return false;
            memcpy(out, p + name_len + 1, value_len);
            out[value_len] = '\0';
            return true;
        }
        if (p[item_len] != '&')
            break;
        p += item_len + 1;
    }
    return false;
}

static bool parse_amz_date(const char *s, time_t *out)
{
    struct tm tm = {0};
    if (strlen(s) != 16 || s[8] != 'T' || s[15] != 'Z')
        return false;
    for (int i = 0; i < 15; i++)
        if (i != 8 && !isdigit((unsigned char)s[i]))
            return false;
    if (sscanf(s, "%4d%2d%2dT%2d%2d%2dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec) != 6)
        return false;
    if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
        tm.tm_min > 59 || tm.tm_sec > 60)
        return false;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return false;
    *out = t;
    return true;
}

bool hub_url_expiry(const char *url, time_t *expiry)
{
    char value[32];
    uint64_t number;
    if (!url)
        return false;
    if (query_param(url, "Expires", value, sizeof value) && hub_parse_uint64(value, &number) &&
        number < (uint64_t)1 << 40) {
        *expiry = (time_t)number;
        return true;
    }
    time_t signed_at;
    if (query_param(url, "X-Amz-Date", value, sizeof value) && parse_amz_date(value, &signed_at) &&
        query_param(url, "X-Amz-Expires", value, sizeof value) && hub_parse_uint64(value, &number) &&
        number <= 7 * 24 * 3600) {
        *expiry = signed_at + (time_t)number;
        return true;
    }
    return false;
}
