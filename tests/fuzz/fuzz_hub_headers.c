/* libFuzzer target: the Hub client's header and URL parsers (Content-Range, Link,
 * Retry-After, RateLimit, ETag, origins, Location resolution, percent-encoding, signed-URL
 * expiry). The first byte picks the parser; the rest, NUL-terminated, is the value (for
 * Location resolution: base and location separated by the first newline). Each accepted
 * result is checked against the invariant its parser promises. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"

static void check_origin_of(const char *url)
{
    hub_origin origin;
    if (!hub_url_origin(url, &origin))
        abort();
    if (origin.port == 0 || origin.port > 65535 || !origin.host[0])
        abort();
}

static void fuzz_value(unsigned selector, char *value)
{
    switch (selector % 10) {
    case 0: {
        hub_content_range r;
        if (hub_parse_content_range(value, &r) &&
            ((r.satisfied && r.last < r.first) ||
             (r.satisfied && r.size_known && r.last >= r.size) || (!r.satisfied && !r.size_known)))
            abort();
        break;
    }
    case 1: {
        char *url = NULL;
        if (hub_parse_link_next(value, &url)) {
            if (!url || !url[0] || strchr(url, '>'))
                abort();
            free(url);
        }
        break;
    }
    case 2: {
        long s = hub_parse_retry_after_s(value, 1700000000);
        long s_later = hub_parse_retry_after_s(value, 1700000000 + 10);
        if ((s == -1) != (s_later == -1) || s_later > s)
            abort();                       /* a wait never grows as time passes */
        long t = hub_parse_ratelimit_reset_s(value);
        if (s < -1 || t < -1 || s > 86400 || t > 86400)
            abort();
        break;
    }
    case 3: {
        char etag[80];
        if (hub_parse_etag(value, etag, sizeof etag) && (!etag[0] || strchr(etag, '"')))
            abort();
        break;
    }
    case 4: {
        uint64_t v;
        hub_parse_uint64(value, &v);
        break;
    }
    case 5: {
        hub_origin a;
        if (hub_url_origin(value, &a) && strcmp(a.scheme, "http") && strcmp(a.scheme, "https"))
            abort();
        break;
    }
    case 6: {
        char *newline = strchr(value, '\n');
        const char *base = value, *location = "";
        if (newline) {
            *newline = '\0';
            location = newline + 1;
        }
        char *resolved = hub_url_resolve(base, location);
        if (resolved) {
            check_origin_of(resolved);     /* only absolute http(s) URLs come out */
            free(resolved);
        }
        break;
    }
    case 7:
    case 8: {
        char *encoded = hub_url_encode(value, selector % 10 == 8);
        for (const char *p = encoded; p && *p; p++)
            if (!isalnum((unsigned char)*p) && !strchr("-._~%/", *p))
                abort();
        if (encoded && selector % 10 == 7 && strchr(encoded, '/'))
            abort();
        free(encoded);
        break;
    }
    default: {
        time_t expiry;
        hub_url_expiry(value, &expiry);
        break;
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char *value = malloc(size);
    if (!value)
        return 0;
    memcpy(value, data + 1, size - 1);
    value[size - 1] = '\0';
    fuzz_value(data[0], value);
    free(value);
    return 0;
}
