/* parse_headers.c — header values: numbers, Link, Content-Range, Retry-After (seconds or an
 * HTTP date), RateLimit, ETag. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

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

static const char *const MONTH_NAMES[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static const char *const DAY_NAMES[7] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
static const char *const LONG_DAY_NAMES[7] = {"Monday", "Tuesday", "Wednesday", "Thursday",
                                              "Friday", "Saturday", "Sunday"};

typedef struct http_date {
    int64_t year;
    int month, day, hour, minute, second;    /* month 1-12 */
} http_date;

/* Advances *p past one of names (exact case, as RFC 9110 writes them). */
static bool take_name(const char **p, const char *const *names, int count, int *index)
{
    for (int i = 0; i < count; i++) {
        size_t n = strlen(names[i]);
        if (strncmp(*p, names[i], n) == 0) {
            *p += n;
            *index = i;
            return true;
        }
    }
    return false;
}

static bool take_text(const char **p, const char *text)
{
    size_t n = strlen(text);
    if (strncmp(*p, text, n) != 0)
        return false;
    *p += n;
    return true;
}

/* Exactly n digits. */
static bool take_digits(const char **p, int n, int *out)
{
    int value = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return false;
        value = value * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = value;
    return true;
}

static bool take_month(const char **p, http_date *d)
{
    int index;
    if (!take_name(p, MONTH_NAMES, 12, &index))
        return false;
    d->month = index + 1;
    return true;
}

/* "HH:MM:SS" */
static bool take_time_of_day(const char **p, http_date *d)
{
    return take_digits(p, 2, &d->hour) && take_text(p, ":") && take_digits(p, 2, &d->minute) &&
           take_text(p, ":") && take_digits(p, 2, &d->second);
}

/* IMF-fixdate after "Sun, ": "06 Nov 1994 08:49:37 GMT" */
static bool take_imf_fixdate(const char **p, http_date *d)
{
    int year = 0;
    bool ok = take_digits(p, 2, &d->day) && take_text(p, " ") && take_month(p, d) &&
              take_text(p, " ") && take_digits(p, 4, &year) && take_text(p, " ") &&
              take_time_of_day(p, d) && take_text(p, " GMT");
    d->year = year;
    return ok;
}

/* RFC 850 after "Sunday, ": "06-Nov-94 08:49:37 GMT"; the century is the one that puts the
 * date at most 50 years ahead of now (RFC 9110 section 5.6.7). */
static bool take_rfc850_date(const char **p, http_date *d, time_t now)
{
    int two_digit_year;
    if (!(take_digits(p, 2, &d->day) && take_text(p, "-") && take_month(p, d) &&
          take_text(p, "-") && take_digits(p, 2, &two_digit_year) && take_text(p, " ") &&
          take_time_of_day(p, d) && take_text(p, " GMT")))
        return false;
    struct tm today;
    if (!gmtime_r(&now, &today))
        return false;
    int64_t this_year = (int64_t)today.tm_year + 1900;
    d->year = this_year - this_year % 100 + two_digit_year;
    if (d->year > this_year + 50)
        d->year -= 100;
    return true;
}

/* asctime after "Sun ": "Nov  6 08:49:37 1994" */
static bool take_asctime_date(const char **p, http_date *d)
{
    int year = 0;
    if (!take_month(p, d) || !take_text(p, " "))
        return false;
    if (**p == ' ') {
        (*p)++;
        if (!take_digits(p, 1, &d->day))
            return false;
    } else if (!take_digits(p, 2, &d->day)) {
        return false;
    }
    bool ok = take_text(p, " ") && take_time_of_day(p, d) && take_text(p, " ") &&
              take_digits(p, 4, &year);
    d->year = year;
    return ok;
}

static bool take_http_date(const char **p, http_date *d, time_t now)
{
    int weekday;
    const char *start = *p;
    if (take_name(p, LONG_DAY_NAMES, 7, &weekday) && take_text(p, ", "))
        return take_rfc850_date(p, d, now);
    *p = start;
    if (!take_name(p, DAY_NAMES, 7, &weekday))
        return false;
    if (take_text(p, ", "))
        return take_imf_fixdate(p, d);
    return take_text(p, " ") && take_asctime_date(p, d);
}

static bool is_leap_year(int64_t year)
{
    return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

static bool date_is_valid(const http_date *d)
{
    static const int days_in_month[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int month_days = days_in_month[d->month - 1] + (d->month == 2 && is_leap_year(d->year));
    return d->day >= 1 && d->day <= month_days && d->hour <= 23 && d->minute <= 59 &&
           d->second <= 60;                  /* 60: a leap second */
}

/* Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's
 * days_from_civil). */
static int64_t days_since_epoch(int64_t year, int month, int day)
{
    year -= month <= 2;
    int64_t era = (year >= 0 ? year : year - 399) / 400;
    int64_t year_of_era = year - era * 400;
    int64_t day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
    int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + day_of_era - 719468;
}

static long seconds_until(const http_date *d, time_t now)
{
    int64_t at = days_since_epoch(d->year, d->month, d->day) * 86400 + d->hour * 3600 +
                 d->minute * 60 + d->second;
    int64_t wait = at - (int64_t)now;
    if (wait <= 0)
        return 0;
    return wait > RETRY_SECONDS_MAX ? RETRY_SECONDS_MAX : (long)wait;
}

long hub_parse_retry_after_s(const char *value, time_t now)
{
    if (!value)
        return -1;
    uint64_t seconds;
    if (hub_parse_uint64(value, &seconds))
        return seconds > (uint64_t)RETRY_SECONDS_MAX ? RETRY_SECONDS_MAX : (long)seconds;
    const char *p = skip_blanks(value);
    http_date date;
    if (!take_http_date(&p, &date, now) || *skip_blanks(p) != '\0' || !date_is_valid(&date))
        return -1;
    return seconds_until(&date, now);
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
