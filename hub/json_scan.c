/* json_scan.c — strict JSON checking and top-level iteration without building a tree.
 *
 * cJSON turns every value into a 64-byte node plus separately allocated strings: a 64 MiB body
 * of `[0,0,0,...]` would become 2.5 GiB. So the parsers first check the whole text here (no
 * allocation), then hand cJSON one top-level item at a time, each small or bounded by them. */
#include <stdbool.h>
#include <string.h>

#include "parse.h"

typedef struct scanner {
    const char *p, *end;
    int depth;
    hub_json_visit visit;        /* called for the items of the outermost container only */
    void *ctx;
    bool stopped;                /* visit asked to stop */
} scanner;

static bool at(const scanner *s, char c)
{
    return s->p < s->end && *s->p == c;
}

static void skip_space(scanner *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        s->p++;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex_digit(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool scan_escape(scanner *s)
{
    if (s->p >= s->end)
        return false;
    if (*s->p != 'u') {
        bool known = memchr("\"\\/bfnrt", *s->p, 8) != NULL;
        s->p++;
        return known;
    }
    if (s->end - s->p < 5)
        return false;
    for (int i = 1; i <= 4; i++)
        if (!is_hex_digit(s->p[i]))
            return false;
    s->p += 5;
    return true;
}

static bool scan_string(scanner *s)
{
    if (!at(s, '"'))
        return false;
    s->p++;
    while (s->p < s->end) {
        unsigned char c = (unsigned char)*s->p++;
        if (c == '"')
            return true;
        if (c < 0x20 || (c == '\\' && !scan_escape(s)))
            return false;
    }
    return false;
}

static bool scan_digits(scanner *s)
{
    const char *start = s->p;
    while (s->p < s->end && is_digit(*s->p))
        s->p++;
    return s->p > start;
}

static bool scan_number(scanner *s)
{
    if (at(s, '-'))
        s->p++;
    if (at(s, '0'))
        s->p++;
    else if (!scan_digits(s))
        return false;
    if (at(s, '.')) {
        s->p++;
        if (!scan_digits(s))
            return false;
    }
    if (at(s, 'e') || at(s, 'E')) {
        s->p++;
        if (at(s, '+') || at(s, '-'))
            s->p++;
        if (!scan_digits(s))
            return false;
    }
    return true;
}

static bool scan_literal(scanner *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return false;
    s->p += n;
    return true;
}

static bool scan_value(scanner *s);

/* One key or element of the container being scanned, reported when it is the outermost. */
static bool scan_item(scanner *s, bool is_object, bool outermost)
{
    hub_json_span key = {NULL, 0}, value;
    skip_space(s);
    if (is_object) {
        key.start = s->p;
        if (!scan_string(s))
            return false;
        key.len = (size_t)(s->p - key.start);
        skip_space(s);
        if (!at(s, ':'))
            return false;
        s->p++;
        skip_space(s);
    }
    value.start = s->p;
    if (!scan_value(s))
        return false;
    value.len = (size_t)(s->p - value.start);
    if (outermost && s->visit && !s->visit(s->ctx, key, value))
        s->stopped = true;
    return true;
}

static bool scan_container(scanner *s)
{
    bool is_object = *s->p == '{';
    char close = is_object ? '}' : ']';
    bool outermost = s->depth == 0;
    if (++s->depth > HUB_JSON_NESTING_MAX)
        return false;
    s->p++;
    skip_space(s);
    if (!at(s, close)) {
        for (;;) {
            if (!scan_item(s, is_object, outermost))
                return false;
            if (s->stopped)
                return true;
            skip_space(s);
            if (!at(s, ','))
                break;
            s->p++;
        }
        if (!at(s, close))
            return false;
    }
    s->p++;
    s->depth--;
    return true;
}

static bool scan_value(scanner *s)
{
    if (s->p >= s->end)
        return false;
    switch (*s->p) {
    case '{':
    case '[': return scan_container(s);
    case '"': return scan_string(s);
    case 't': return scan_literal(s, "true");
    case 'f': return scan_literal(s, "false");
    case 'n': return scan_literal(s, "null");
    default: return scan_number(s);
    }
}

/* Scans the one value of json; with visit set, reports the outermost container's items. */
static bool scan_text(const char *json, size_t len, hub_json_visit visit, void *ctx)
{
    if (!json)
        return false;
    scanner s = {.p = json, .end = json + len, .visit = visit, .ctx = ctx};
    skip_space(&s);
    if (!scan_value(&s))
        return false;
    if (s.stopped)
        return true;
    skip_space(&s);
    return s.p == s.end;
}

bool hub_json_is_valid(const char *json, size_t len)
{
    return scan_text(json, len, NULL, NULL);
}

bool hub_json_each_item(const char *json, size_t len, char kind, hub_json_visit visit, void *ctx)
{
    if (!hub_json_is_valid(json, len))
        return false;
    const char *p = json;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (*p != kind || (kind != '[' && kind != '{'))
        return false;
    return scan_text(json, len, visit, ctx);
}

bool hub_json_span_has_escaped_nul(hub_json_span span)
{
    for (size_t i = 0; i + 5 < span.len; i++) {
        if (span.start[i] != '\\')
            continue;
        if (span.start[i + 1] == 'u' && memcmp(span.start + i + 2, "0000", 4) == 0)
            return true;
        i++;                          /* the escaped character is not an escape itself */
    }
    return false;
}
