/* parse_headers.c — header values: numbers, Link, Content-Range, Retry-After, RateLimit, ETag. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "parse.h"

#define RETRY_SECONDS_MAX 86400L   /* anything longer is nonsense; callers cap lower still */

static const char *skip_blanks(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

/* Parses digits at *s, advancing it; false without digits or on overflow. */
static bool take_uint64(const char **s, uint64_t *out)
{
    const char *p = *s;
    uint64_t value = 0;
    if (!isdigit((unsigned char)*p))
        return false;
    for (; isdigit((unsigned char)*p); p++) {
        uint64_t digit = (uint64_t)(*p - '0');
        if (value > (UINT64_MAX - digit) / 10)
            return false;
        value = value * 10 + digit;
    }
    *s = p;
    *out = value;
    return true;
}

bool hub_parse_uint64(const char *s, uint64_t *out)
{
    if (!s)
        return false;
    const char *p = skip_blanks(s);
    uint64_t value;
    if (!take_uint64(&p, &value))
        return false;
    p = skip_blanks(p);
    if (*p != '\0')
        return false;
    *out = value;
    return true;
}

/* Whether the parameters text of one link (between '>' and the next link) holds rel=next. */
static bool params_say_next(const char *params, size_t n)
{
    for (size_t i = 0; i + 3 <= n; i++) {
        if (strncasecmp(params + i, "rel", 3) != 0)
            continue;
        size_t j = i + 3;
        while (j < n && (params[j] == ' ' || params[j] == '\t'))
            j++;
        if (j >= n || params[j] != '=')
            continue;
        j++;
        while (j < n && (params[j] == ' ' || params[j] == '\t'))
            j++;
        bool quoted = j < n && params[j] == '"';
        if (quoted)
            j++;
        /* rel may hold several space-separated relation types */
        while (j < n && params[j] != '"' && params[j] != ';' && params[j] != ',') {
            size_t start = j;
            while (j < n && params[j] != ' ' && params[j] != '"' && params[j] != ';')
                j++;
            if (j - start == 4 && strncasecmp(params + start, "next", 4) == 0)
                return true;
            while (j < n && params[j] == ' ')
                j++;
            if (!quoted)
                break;
        }
    }
    return false;
}

bool hub_parse_link_next(const char *value, char **url_out)
{
    if (!value)
        return false;
    const char *p = value;
    while ((p = strchr(p, '<')) != NULL) {
        const char *url_start = p + 1;
        const char *url_end = strchr(url_start, '>');
        if (!url_end)
            return false;
        const char *params = url_end + 1;
        const char *next_link = strchr(params, '<');
        size_t params_len = next_link ? (size_t)(next_link - params) : strlen(params);
        if (params_say_next(params, params_len)) {
            size_t url_len = (size_t)(url_end - url_start);
            if (url_len == 0)
                return false;
            char *url = malloc(url_len + 1);
            if (!url)
                return false;
            memcpy(url, url_start, url_len);
            url[url_len] = '\0';
            *url_out = url;
            return true;
        }
        p = url_end + 1;
    }
    return false;
}

bool hub_parse_content_range(const char *value, hub_content_range *out)
{
    if (!value)
        return false;
    const char *p = skip_blanks(value);
    if (strncasecmp(p, "bytes", 5) != 0)
        return false;
    p += 5;
    if (*p != ' ')
        return false;
    p = skip_blanks(p);
    hub_content_range range = {0};
    if (*p == '*') {
        p++;
    } else {
        range.satisfied = true;
        if (!take_uint64(&p, &range.first) || *p++ != '-' || !take_uint64(&p, &range.last) ||
            range.last < range.first)
            return false;
    }
    if (*p++ != '/')
        return false;
    if (*p == '*') {
        if (!range.satisfied)
            return false;                 /* an unsatisfied range of unknown size says nothing */
        p++;
    } else {
        if (!take_uint64(&p, &range.size))
            return false;
        range.size_known = true;
        if (range.satisfied && range.last >= range.size)
            return false;
    }
    if (*skip_blanks(p) != '\0')
        return false;
    *out = range;
    return true;
}

long hub_parse_retry_after_s(const char *value)
{
    uint64_t seconds;
    if (!hub_parse_uint64(value, &seconds))
        return -1;
    return seconds > (uint64_t)RETRY_SECONDS_MAX ? RETRY_SECONDS_MAX : (long)seconds;
}

/* The value of parameter name (";name=digits") in a structured-field item, or false. */
static bool ratelimit_param(const char *value, char name, uint64_t *out)
{
    bool in_string = false;
    for (const char *p = value; *p; p++) {
        if (*p == '"') {
            in_string = !in_string;
            continue;
        }
        if (in_string || *p != ';')
            continue;
        const char *q = skip_blanks(p + 1);
        if (*q != name || q[1] != '=')
            continue;
        q += 2;
        return take_uint64(&q, out);
    }
    return false;
}

long hub_parse_ratelimit_reset_s(const char *value)
{
    if (!value)
        return -1;
    uint64_t remaining, reset;
    if (ratelimit_param(value, 'r', &remaining) && remaining > 0)
        return -1;                        /* quota left: t is no reason to wait */
    if (!ratelimit_param(value, 't', &reset))
        return -1;
    return reset > (uint64_t)RETRY_SECONDS_MAX ? RETRY_SECONDS_MAX : (long)reset;
}

bool hub_parse_etag(const char *value, char *out, size_t out_cap)
{
    if (!value || out_cap == 0)
        return false;
    const char *p = skip_blanks(value);
    if (strncmp(p, "W/", 2) == 0)
        p += 2;
    size_t n = strlen(p);
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (n >= 2 && p[0] == '"' && p[n - 1] == '"') {
        p++;
        n -= 2;
    }
    if (n == 0 || n >= out_cap)
        return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] <= 0x20 || p[i] >= 0x7f || p[i] == '"')
            return false;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}
