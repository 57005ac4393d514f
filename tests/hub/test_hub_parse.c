/* Unit tests of the pure parsers of hub/ (parse.h): JSON bodies, header values, URLs.
 * Expected values come from the protocol (RFC 7233 ranges, RFC 8288 links, the Hub's JSON
 * shapes in shared/design/hub-protocol.md), written out by hand. */
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "check.h"
#include "parse.h"

#define SHA1_A "0123456789abcdef0123456789abcdef01234567"
#define SHA256_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

static void test_validators(void)
{
    CHECK(hub_is_hex(SHA1_A, 40));
    CHECK(hub_is_hex("ABCDEF0123456789ABCDEF0123456789ABCDEF01", 40));
    CHECK(!hub_is_hex(SHA1_A "0", 40));     /* longer than asked */
    CHECK(!hub_is_hex("0123456789abcdef0123456789abcdef0123456g", 40));
    CHECK(!hub_is_hex(NULL, 40));

    const char *good_paths[] = {"config.json", "a/b/c.safetensors", "dir.with.dots/x", "..a",
                                "a/...", "weird name (1).bin", "a\\b"};
    for (size_t i = 0; i < sizeof good_paths / sizeof *good_paths; i++)
        CHECK(hub_path_is_valid(good_paths[i], strlen(good_paths[i])));
    const char *bad_paths[] = {"", "/etc/passwd", "../x", "a/../b", "a/./b", ".", "..",
                               "a//b", "a/", "tab\there", "a/.."};
    for (size_t i = 0; i < sizeof bad_paths / sizeof *bad_paths; i++)
        CHECK(!hub_path_is_valid(bad_paths[i], strlen(bad_paths[i])));
    CHECK(!hub_path_is_valid("a\0b", 3));   /* an embedded NUL */
    char long_path[HUB_PATH_MAX + 2];
    memset(long_path, 'a', sizeof long_path);
    for (size_t i = 100; i < sizeof long_path; i += 101)
        long_path[i] = '/';
    CHECK(hub_path_is_valid(long_path, HUB_PATH_MAX));
    CHECK(!hub_path_is_valid(long_path, HUB_PATH_MAX + 1));
    char long_name[HUB_NAME_MAX + 2];
    memset(long_name, 'n', sizeof long_name);
    CHECK(hub_path_is_valid(long_name, HUB_NAME_MAX));
    CHECK(!hub_path_is_valid(long_name, HUB_NAME_MAX + 1));

    CHECK(hub_repo_id_is_valid("test-org/tiny-llama"));
    CHECK(hub_repo_id_is_valid("gpt2"));
    CHECK(hub_repo_id_is_valid("Org_1/Model.v2"));
    CHECK(!hub_repo_id_is_valid("a/b/c"));
    CHECK(!hub_repo_id_is_valid("../x"));
    CHECK(!hub_repo_id_is_valid("org/"));
    CHECK(!hub_repo_id_is_valid("org/na me"));
    CHECK(!hub_repo_id_is_valid("org/na%2Fme"));
    CHECK(!hub_repo_id_is_valid(""));
}

static void test_repo_info(void)
{
    char sha[41];
    const char *info = "{\"id\":\"o/n\",\"sha\":\"0123456789ABCDEF0123456789abcdef01234567\","
                       "\"siblings\":[{\"rfilename\":\"a\"}]}";
    CHECK(hub_parse_repo_info_sha(info, strlen(info), sha));
    CHECK(strcmp(sha, SHA1_A) == 0);      /* lowercased */
    /* the key written with an escape is the same key; the first "sha" counts */
    const char *escaped = "{\"\\u0073ha\":\"" SHA1_A "\",\"sha\":\"bad\"}";
    CHECK(hub_parse_repo_info_sha(escaped, strlen(escaped), sha));
    const char *bad[] = {"{\"sha\":\"abc\"}", "{\"sha\":12}", "[]", "{\"id\":\"x\"}", "not json",
                         "{\"sha\":\"" SHA1_A "\"", "{\"sha\":\"" SHA1_A "0\"}",
                         "{\"sha\":\"" SHA1_A "\"} trailing", "{\"sha\":\"" SHA1_A "\",}",
                         "{\"siblings\":[tru],\"sha\":\"" SHA1_A "\"}",
                         "{\"sha\":\"" SHA1_A "\",\"x\":01}",
                         "{\"sha\":\"0123456789abcdef0123456789abcdef0123456\\u0000\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(!hub_parse_repo_info_sha(bad[i], strlen(bad[i]), sha));
}

typedef struct listing {
    hub_tree tree;
    hub_tree_builder builder;
    char why[256];
} listing;

static void listing_init(listing *l, size_t max_entries, size_t max_path_bytes)
{
    memset(l, 0, sizeof *l);
    l->builder.tree = &l->tree;
    l->builder.max_entries = max_entries;
    l->builder.max_path_bytes = max_path_bytes;
}

static hub_status parse_page(listing *l, const char *json)
{
    l->why[0] = '\0';
    return hub_parse_tree_page(json, strlen(json), &l->builder, l->why, sizeof l->why);
}

#define FILE_ITEM(path) "{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":1,\"path\":\"" path "\"}"

static void test_tree_page(void)
{
    listing l;
    listing_init(&l, 100, 1 << 20);
    const char *page1 =
        "[{\"type\":\"directory\",\"oid\":\"" SHA1_A "\",\"size\":0,\"path\":\"sub\"},"
        "{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":12,\"path\":\"sub/a.json\"},"
        "{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":134,\"path\":\"m.safetensors\","
        "\"lfs\":{\"oid\":\"" SHA256_A "\",\"size\":123456789012,\"pointerSize\":134}}]";
    CHECK_EQ_INT(parse_page(&l, page1), HUB_OK);
    CHECK_EQ_INT(l.tree.count, 3);
    CHECK(l.tree.entries[0].is_directory && strcmp(l.tree.entries[0].path, "sub") == 0);
    CHECK(!l.tree.entries[1].is_directory && l.tree.entries[1].size == 12 && !l.tree.entries[1].is_lfs);
    CHECK(l.tree.entries[2].is_lfs && l.tree.entries[2].size == 123456789012ULL);
    CHECK(strcmp(l.tree.entries[2].lfs_sha256, SHA256_A) == 0);
    CHECK(strcmp(l.tree.entries[2].oid, SHA1_A) == 0);

    /* a second page appends */
    CHECK_EQ_INT(parse_page(&l, "[" FILE_ITEM("z") "]"), HUB_OK);
    CHECK_EQ_INT(l.tree.count, 4);
    CHECK_EQ_INT(parse_page(&l, " [ ] "), HUB_OK);
    CHECK_EQ_INT(l.tree.count, 4);
    CHECK(l.tree.skipped == 0 && !l.tree.truncated[0]);
    hub_tree_free(&l.tree);

    /* malformed pages and entries fail the listing, naming the entry */
    struct { const char *json; const char *why; } bad[] = {
        {"{}", "not a JSON array"},
        {"[" FILE_ITEM("a") ",]", "not valid JSON"},
        {"[" FILE_ITEM("a") "] x", "not valid JSON"},
        {"[{\"type\":\"link\",\"oid\":\"" SHA1_A "\",\"size\":1,\"path\":\"a\"}]", "type"},
        {"[{\"type\":\"file\",\"oid\":\"xyz\",\"size\":1,\"path\":\"a\"}]", "oid"},
        {"[{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":-1,\"path\":\"a\"}]", "size"},
        {"[{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":1.5,\"path\":\"a\"}]", "size"},
        {"[{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":1e300,\"path\":\"a\"}]", "size"},
        {"[{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"path\":\"a\"}]", "size"},
        {"[{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":1,\"path\":\"a\",\"lfs\":{\"oid\":\"x\"}}]",
         "lfs.oid"},
        {"[{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":1,\"path\":7}]", "path is not a string"},
        {"[" FILE_ITEM("ok") ",{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":1,\"path\":\"b\"},"
         "{\"type\":\"file\",\"oid\":\"abc\",\"size\":1,\"path\":\"c\"}]", "tree entry 2 (\"c\")"},
        {"[1]", "not an object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        listing_init(&l, 100, 1 << 20);
        CHECK_EQ_INT(parse_page(&l, bad[i].json), HUB_ERR_PROTOCOL);
        CHECK_STR_CONTAINS(l.why, bad[i].why);
        hub_tree_free(&l.tree);
    }

    /* deep nesting is refused before anything recurses */
    char deep[4096];
    size_t n = 0;
    for (; n < 1000; n++)
        deep[n] = '[';
    deep[n] = '\0';
    listing_init(&l, 100, 1 << 20);
    CHECK_EQ_INT(parse_page(&l, deep), HUB_ERR_PROTOCOL);
    hub_tree_free(&l.tree);
}

/* Entries whose path no filesystem can show are left out, counted and described; the rest of
 * the listing stays. */
static void test_tree_skips_unshowable_entries(void)
{
    char long_name[HUB_NAME_MAX + 2];
    memset(long_name, 'n', HUB_NAME_MAX + 1);
    long_name[HUB_NAME_MAX + 1] = '\0';
    char long_path[HUB_PATH_MAX + 8];
    for (size_t i = 0; i < sizeof long_path - 1; i++)
        long_path[i] = i % 100 == 99 ? '/' : 'd';
    long_path[sizeof long_path - 1] = '\0';
    const char *paths[] = {"new\\nline", "../etc/passwd", "/abs", "a/./b", "dir//x", "x/..",
                           "tab\\there", "nul\\u0000byte", "del\\u007f", "", long_name, long_path};
    const char *reasons[] = {"control character", "\"..\"", "absolute", "\".\"", "empty part",
                             "\"..\"", "control character", "control character",
                             "control character", "empty path", "longer than 255", "longer than 4096"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        size_t size = strlen(paths[i]) + 1024;
        char *page = malloc(size);
        snprintf(page, size,
                 "[" FILE_ITEM("config.json") ","
                 "{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":5,\"path\":\"%s\"},"
                 FILE_ITEM("z.bin") "]", paths[i]);
        listing l;
        listing_init(&l, 100, 1 << 20);
        CHECK_EQ_INT(parse_page(&l, page), HUB_OK);
        CHECK_EQ_INT(l.tree.count, 2);
        CHECK(l.tree.count == 2 && strcmp(l.tree.entries[0].path, "config.json") == 0 &&
              strcmp(l.tree.entries[1].path, "z.bin") == 0);
        CHECK_EQ_INT(l.tree.skipped, 1);
        CHECK_STR_CONTAINS(l.tree.skipped_shown, reasons[i]);
        for (const char *c = l.tree.skipped_shown; *c; c++)    /* sanitized for a log line */
            CHECK(*c >= 0x20 && *c < 0x7f);
        CHECK(strlen(l.tree.skipped_shown) < 160);
        CHECK(!l.tree.truncated[0]);
        hub_tree_free(&l.tree);
        free(page);
    }

    /* the examples say what was left out, sanitized; the count covers every page */
    listing l;
    listing_init(&l, 100, 1 << 20);
    CHECK_EQ_INT(parse_page(&l, "[" FILE_ITEM("a\\nb") "," FILE_ITEM("ok") "]"), HUB_OK);
    CHECK_EQ_INT(parse_page(&l, "[" FILE_ITEM("c\\rd") "," FILE_ITEM("e/../f") "," FILE_ITEM("g/.") "]"),
                 HUB_OK);
    CHECK_EQ_INT(parse_page(&l, "[" FILE_ITEM("h\\u0001") "]"), HUB_OK);
    CHECK_EQ_INT(l.tree.count, 1);
    CHECK_EQ_INT(l.tree.skipped, 5);
    CHECK_STR_CONTAINS(l.tree.skipped_shown, "\"a?b\" (a control character such as a newline)");
    CHECK_STR_CONTAINS(l.tree.skipped_shown, "\"c?d\"");
    CHECK(strstr(l.tree.skipped_shown, "h?") == NULL);     /* only the first few */
    hub_tree_free(&l.tree);

    /* an entry too big to be one, and a lone UTF-16 surrogate cJSON cannot decode */
    size_t big_size = HUB_TREE_ITEM_JSON_MAX + 1024;
    char *big = malloc(big_size);
    int at = snprintf(big, big_size, "[" FILE_ITEM("a") ",{\"type\":\"file\",\"oid\":\"" SHA1_A
                      "\",\"size\":1,\"path\":\"b\",\"junk\":\"");
    memset(big + at, 'x', HUB_TREE_ITEM_JSON_MAX);
    snprintf(big + at + HUB_TREE_ITEM_JSON_MAX, big_size - at - HUB_TREE_ITEM_JSON_MAX,
             "\"}," FILE_ITEM("\\ud800x") "," FILE_ITEM("\\udc00") "," FILE_ITEM("\\ud83d\\ude00") "]");
    listing_init(&l, 100, 1 << 20);
    CHECK_EQ_INT(parse_page(&l, big), HUB_OK);
    CHECK_EQ_INT(l.tree.count, 2);                          /* "a" and the emoji */
    CHECK(l.tree.count == 2 && strcmp(l.tree.entries[1].path, "\xf0\x9f\x98\x80") == 0);
    CHECK_EQ_INT(l.tree.skipped, 3);
    CHECK_STR_CONTAINS(l.tree.skipped_shown, "64 KiB");
    hub_tree_free(&l.tree);
    free(big);
}

/* Past the entry or path-bytes limit the listing is cut: the first entries stay, the cut is
 * said. */
static void test_tree_limits(void)
{
    listing l;
    listing_init(&l, 4, 1 << 20);
    CHECK_EQ_INT(parse_page(&l, "[" FILE_ITEM("a") "," FILE_ITEM("b\\n") "," FILE_ITEM("c") "]"), HUB_OK);
    CHECK_EQ_INT(parse_page(&l, "[" FILE_ITEM("d") "," FILE_ITEM("e") "," FILE_ITEM("f") "]"), HUB_OK);
    CHECK_EQ_INT(l.tree.count, 4);
    CHECK(strcmp(l.tree.entries[3].path, "e") == 0);
    CHECK_STR_CONTAINS(l.tree.truncated, "more than 4 entries");
    CHECK_EQ_INT(l.tree.skipped, 1);                        /* the cut is not a skip */
    /* once cut, later pages add nothing, even malformed ones */
    CHECK_EQ_INT(parse_page(&l, "[" FILE_ITEM("g") "]"), HUB_OK);
    CHECK_EQ_INT(parse_page(&l, "junk"), HUB_OK);
    CHECK_EQ_INT(l.tree.count, 4);
    hub_tree_free(&l.tree);

    /* bytes of paths: "aaaa" and "bbbb" take 5 each with their NULs: 11 bytes hold them, not
     * "c" as well */
    listing_init(&l, 100, 11);
    CHECK_EQ_INT(parse_page(&l, "[" FILE_ITEM("aaaa") "," FILE_ITEM("bbbb") "," FILE_ITEM("c") "]"),
                 HUB_OK);
    CHECK_EQ_INT(l.tree.count, 2);
    CHECK_STR_CONTAINS(l.tree.truncated, "MiB of paths");
    hub_tree_free(&l.tree);
}

static long peak_rss_kib(void)
{
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_maxrss;
}

/* A len-byte JSON text: head, then "0,0,...,0", then tail. */
static char *numbers_body(size_t len, const char *head, const char *tail)
{
    size_t head_len = strlen(head), tail_len = strlen(tail);
    char *body = malloc(len);
    memcpy(body, head, head_len);
    size_t i = head_len;
    for (; i + 2 < len - tail_len; i += 2)
        memcpy(body + i, "0,", 2);
    memcpy(body + i, len - tail_len - i == 2 ? "0 " : "0", len - tail_len - i);
    memcpy(body + len - tail_len, tail, tail_len);
    return body;
}

/* Bodies of many tiny values: parsing them must not cost many times their size (a cJSON tree
 * of a whole body takes about 40 bytes per byte of these). */
static void test_json_memory_is_bounded(void)
{
    size_t len = 32u << 20;
    char *info = numbers_body(len, "{\"siblings\":[", "],\"sha\":\"" SHA1_A "\",\"error\":[\"e\",0]}");
    char *page = numbers_body(len, "[", "]");
    CHECK(hub_json_is_valid(info, len) && hub_json_is_valid(page, len));
    long before = peak_rss_kib();
    char sha[41], text[16];
    CHECK(hub_parse_repo_info_sha(info, len, sha) && strcmp(sha, SHA1_A) == 0);
    CHECK(hub_parse_error_body(info, len, text, sizeof text) && strcmp(text, "e") == 0);
    listing l;
    listing_init(&l, 100, 1 << 20);
    CHECK_EQ_INT(hub_parse_tree_page(page, len, &l.builder, l.why, sizeof l.why), HUB_ERR_PROTOCOL);
    CHECK_STR_CONTAINS(l.why, "not an object");
    long grown_kib = peak_rss_kib() - before;
    printf("peak memory growth parsing %zu MiB bodies of numbers: %ld KiB\n", len >> 20, grown_kib);
    CHECK(grown_kib < (long)(len >> 10));                  /* less than one body */
    hub_tree_free(&l.tree);
    free(info);
    free(page);
}

static void test_error_body(void)
{
    char text[64];
    const char *body = "{\"error\":\"Repository not found\"}";
    CHECK(hub_parse_error_body(body, strlen(body), text, sizeof text));
    CHECK(strcmp(text, "Repository not found") == 0);
    const char *list = "{\"error\":[\"first\",\"second\"]}";
    CHECK(hub_parse_error_body(list, strlen(list), text, sizeof text));
    CHECK(strcmp(text, "first") == 0);
    const char *control = "{\"error\":\"a\\nb\"}";
    CHECK(hub_parse_error_body(control, strlen(control), text, sizeof text));
    CHECK(strcmp(text, "a b") == 0);
    CHECK(!hub_parse_error_body("<html>", 6, text, sizeof text));
    CHECK(!hub_parse_error_body("{\"error\":3}", 11, text, sizeof text));
}

static void test_numbers_and_etags(void)
{
    uint64_t v;
    CHECK(hub_parse_uint64(" 42 ", &v) && v == 42);
    CHECK(hub_parse_uint64("18446744073709551615", &v) && v == UINT64_MAX);
    CHECK(!hub_parse_uint64("18446744073709551616", &v));
    CHECK(!hub_parse_uint64("-1", &v));
    CHECK(!hub_parse_uint64("+1", &v));
    CHECK(!hub_parse_uint64("1x", &v));
    CHECK(!hub_parse_uint64("", &v));
    CHECK(!hub_parse_uint64(NULL, &v));

    char etag[80];
    CHECK(hub_parse_etag("\"abc\"", etag, sizeof etag) && strcmp(etag, "abc") == 0);
    CHECK(hub_parse_etag("W/\"abc\"", etag, sizeof etag) && strcmp(etag, "abc") == 0);
    CHECK(hub_parse_etag("abc", etag, sizeof etag) && strcmp(etag, "abc") == 0);
    CHECK(!hub_parse_etag("\"\"", etag, sizeof etag));
    CHECK(!hub_parse_etag("\"a\"b\"", etag, sizeof etag));
    CHECK(!hub_parse_etag("\"" SHA256_A "\"", etag, 64));   /* 64 chars need a 65-byte buffer */
    CHECK(hub_parse_etag("\"" SHA256_A "\"", etag, 65));
}

static void test_link(void)
{
    char *url = NULL;
    CHECK(hub_parse_link_next("<https://h/api/x?cursor=abc&a=1>; rel=\"next\"", &url));
    CHECK(url && strcmp(url, "https://h/api/x?cursor=abc&a=1") == 0);
    free(url);
    url = NULL;
    CHECK(hub_parse_link_next("<https://h/p>; rel=\"prev\", <https://h/n>; rel=next", &url));
    CHECK(url && strcmp(url, "https://h/n") == 0);
    free(url);
    url = NULL;
    CHECK(hub_parse_link_next("<https://h/n>; title=\"x\"; REL=\"last next\"", &url));
    CHECK(url && strcmp(url, "https://h/n") == 0);
    free(url);
    url = NULL;
    CHECK(!hub_parse_link_next("<https://h/p>; rel=\"prev\"", &url));
    CHECK(!hub_parse_link_next("<https://h/p; rel=\"next\"", &url));   /* unterminated */
    CHECK(!hub_parse_link_next("<https://h/p>; rel=\"nextpage\"", &url));
    CHECK(!hub_parse_link_next("<>; rel=\"next\"", &url));
    CHECK(!hub_parse_link_next(NULL, &url));
    CHECK(url == NULL);
}

static void test_content_range(void)
{
    hub_content_range r;
    CHECK(hub_parse_content_range("bytes 0-99/1000", &r));
    CHECK(r.satisfied && r.first == 0 && r.last == 99 && r.size_known && r.size == 1000);
    CHECK(hub_parse_content_range("bytes */1000", &r));
    CHECK(!r.satisfied && r.size_known && r.size == 1000);
    CHECK(hub_parse_content_range("bytes 5-9/*", &r));
    CHECK(r.satisfied && !r.size_known && r.first == 5 && r.last == 9);
    CHECK(hub_parse_content_range("BYTES 999-999/1000", &r));
    CHECK(!hub_parse_content_range("bytes 0-1000/1000", &r));   /* last must be < size */
    CHECK(!hub_parse_content_range("bytes 9-5/1000", &r));
    CHECK(!hub_parse_content_range("bytes */*", &r));
    CHECK(!hub_parse_content_range("bytes 0-99", &r));
    CHECK(!hub_parse_content_range("items 0-99/100", &r));
    CHECK(!hub_parse_content_range("bytes 0-99/100 junk", &r));
    CHECK(!hub_parse_content_range("bytes -5-99/100", &r));
    CHECK(!hub_parse_content_range("bytes 0-18446744073709551616/1", &r));
}

static void test_retry_headers(void)
{
    time_t now = 1700000000;
    CHECK_EQ_INT(hub_parse_retry_after_s("7", now), 7);
    CHECK_EQ_INT(hub_parse_retry_after_s(" 0 ", now), 0);
    CHECK_EQ_INT(hub_parse_retry_after_s("99999999999999999999", now), -1);
    CHECK_EQ_INT(hub_parse_retry_after_s("9999999", now), 86400);
    CHECK_EQ_INT(hub_parse_retry_after_s("-5", now), -1);
    CHECK_EQ_INT(hub_parse_retry_after_s("", now), -1);
    CHECK_EQ_INT(hub_parse_retry_after_s(NULL, now), -1);

    /* HTTP dates (RFC 9110 section 5.6.7), relative to now. The Unix times are Python's
     * calendar.timegm(email.utils.parsedate_tz(date)): 784111777 is the RFC's example date. */
    time_t rfc_example = 784111777;
    const char *same_moment[] = {"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
                                 "Sun Nov  6 08:49:37 1994", "  Sun, 06 Nov 1994 08:49:37 GMT  "};
    for (size_t i = 0; i < sizeof same_moment / sizeof *same_moment; i++) {
        CHECK_EQ_INT(hub_parse_retry_after_s(same_moment[i], rfc_example - 120), 120);
        CHECK_EQ_INT(hub_parse_retry_after_s(same_moment[i], rfc_example), 0);
        CHECK_EQ_INT(hub_parse_retry_after_s(same_moment[i], rfc_example + 3600), 0);  /* past */
        CHECK_EQ_INT(hub_parse_retry_after_s(same_moment[i], rfc_example - 200000), 86400);
    }
    CHECK_EQ_INT(hub_parse_retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480 - 30), 30);
    CHECK_EQ_INT(hub_parse_retry_after_s("Thu, 29 Feb 1996 00:00:00 GMT", 825552000 - 1), 1);
    CHECK_EQ_INT(hub_parse_retry_after_s("Fri, 31 Dec 2049 23:59:59 GMT", 2524607999 - 59), 59);
    /* RFC 850's two-digit year: the century that puts the date at most 50 years ahead */
    time_t end_of_2025 = 1767225590;    /* 2025-12-31 23:59:50 */
    CHECK_EQ_INT(hub_parse_retry_after_s("Thursday, 01-Jan-26 00:00:10 GMT", end_of_2025), 20);
    CHECK_EQ_INT(hub_parse_retry_after_s("Sunday, 06-Nov-94 08:49:37 GMT", end_of_2025), 0);
    CHECK_EQ_INT(hub_parse_retry_after_s("Monday, 01-Jan-75 00:00:00 GMT", end_of_2025), 86400);
    CHECK_EQ_INT(hub_parse_retry_after_s("Thursday, 01-Jan-76 00:00:00 GMT", end_of_2025), 0);

    const char *malformed[] = {
        "Sun, 31 Feb 1994 08:49:37 GMT", "Sun, 29 Feb 1900 08:49:37 GMT", "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT", "Sun, 06 Nov 1994 08:49:37 UTC", "Sun, 6 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 94 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 GMT junk", "Sun, 06 Nov 1994 08:49:37",
        "Sun, 00 Nov 1994 08:49:37 GMT", "Sun, 06 Foo 1994 08:49:37 GMT", "Sunday, 06 Nov 1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994", "Sun Nov  6 08:49:37 94", "Sun, 06-Nov-94 08:49:37 GMT",
        "sun, 06 nov 1994 08:49:37 gmt", "Sun,", "Sun",
    };
    for (size_t i = 0; i < sizeof malformed / sizeof *malformed; i++)
        CHECK_EQ_INT(hub_parse_retry_after_s(malformed[i], rfc_example - 120), -1);
    CHECK_EQ_INT(hub_parse_ratelimit_reset_s("\"api\";r=0;t=89"), 89);
    CHECK_EQ_INT(hub_parse_ratelimit_reset_s("\"resolvers\"; r=0; t=3"), 3);
    CHECK_EQ_INT(hub_parse_ratelimit_reset_s("\"api\";r=12;t=89"), -1);  /* quota left */
    CHECK_EQ_INT(hub_parse_ratelimit_reset_s("\"a;t=5\";r=0"), -1);      /* inside the name */
    CHECK_EQ_INT(hub_parse_ratelimit_reset_s("\"api\";r=0"), -1);
    CHECK_EQ_INT(hub_parse_ratelimit_reset_s(NULL), -1);
}

static void test_origins(void)
{
    hub_origin a, b;
    CHECK(hub_url_origin("https://huggingface.co/api/models", &a));
    CHECK(strcmp(a.scheme, "https") == 0 && strcmp(a.host, "huggingface.co") == 0 && a.port == 443);
    CHECK(hub_url_origin("HTTPS://HuggingFace.CO:443", &b) && hub_same_origin(&a, &b));
    CHECK(hub_url_origin("http://127.0.0.1:8080/x?y", &a) && a.port == 8080);
    CHECK(hub_url_origin("http://localhost:8080/x", &b) && !hub_same_origin(&a, &b));
    CHECK(hub_url_origin("http://127.0.0.1:8081/x", &b) && !hub_same_origin(&a, &b));
    CHECK(hub_url_origin("https://127.0.0.1:8080/x", &b) && !hub_same_origin(&a, &b));
    CHECK(hub_url_origin("http://[::1]:9/x", &a) && strcmp(a.host, "::1") == 0 && a.port == 9);
    CHECK(!hub_url_origin("ftp://h/x", &a));
    CHECK(!hub_url_origin("file:///etc/passwd", &a));
    CHECK(!hub_url_origin("http://user:pw@h/x", &a));
    CHECK(!hub_url_origin("http://h:0/", &a));
    CHECK(!hub_url_origin("http://h:65536/", &a));
    CHECK(!hub_url_origin("http:///x", &a));
    CHECK(!hub_url_origin("http://h:/x", &a));
    CHECK(!hub_url_origin("http://h x/", &a));
}

static void check_resolved(const char *base, const char *location, const char *expected)
{
    char *got = hub_url_resolve(base, location);
    check_count++;
    if (expected ? !got || strcmp(got, expected) != 0 : got != NULL) {
        check_failures++;
        fprintf(stderr, "resolve(%s, %s) = %s, expected %s\n", base, location, got ? got : "NULL",
                expected ? expected : "NULL");
    }
    free(got);
}

static void test_resolve_location(void)
{
    const char *base = "http://127.0.0.1:5000/org/m/resolve/abc/dir/f.bin";
    check_resolved(base, "https://cdn.example/x?Expires=1", "https://cdn.example/x?Expires=1");
    check_resolved(base, "/api/resolve-cache/models/org/m/abc/f",
                   "http://127.0.0.1:5000/api/resolve-cache/models/org/m/abc/f");
    check_resolved(base, "//cdn.example/y", "http://cdn.example/y");
    check_resolved(base, "g.bin", "http://127.0.0.1:5000/org/m/resolve/abc/dir/g.bin");
    check_resolved(base, "?x=1", "http://127.0.0.1:5000/org/m/resolve/abc/dir/f.bin?x=1");
    check_resolved("http://h", "a", "http://h/a");
    check_resolved(base, "file:///etc/passwd", NULL);
    check_resolved(base, "javascript:alert(1)", NULL);
    check_resolved(base, "ftp://h/x", NULL);
    check_resolved(base, "http://user@evil/x", NULL);
    check_resolved(base, "/with space", NULL);
    check_resolved(base, "", NULL);
    check_resolved("not a url", "/x", NULL);
}

static void test_encode_and_expiry(void)
{
    char *e = hub_url_encode("refs/pr/1", false);
    CHECK(e && strcmp(e, "refs%2Fpr%2F1") == 0);
    free(e);
    e = hub_url_encode("dir/a b+c?#%.json", true);
    CHECK(e && strcmp(e, "dir/a%20b%2Bc%3F%23%25.json") == 0);
    free(e);
    e = hub_url_encode("\xc3\xa9~_-.", false);
    CHECK(e && strcmp(e, "%C3%A9~_-.") == 0);
    free(e);

    time_t t;
    CHECK(hub_url_expiry("https://cdn/x?Signature=s&Expires=1700000000&X-Amz-Expires=60", &t));
    CHECK_EQ_INT(t, 1700000000);
    /* 2023-11-14T22:13:20Z is 1700000000 */
    CHECK(hub_url_expiry("https://cdn/x?X-Amz-Date=20231114T221320Z&X-Amz-Expires=3600", &t));
    CHECK_EQ_INT(t, 1700003600);
    CHECK(!hub_url_expiry("https://cdn/x?X-Amz-Date=20231314T221320Z&X-Amz-Expires=3600", &t));
    CHECK(!hub_url_expiry("https://cdn/x?X-Amz-Expires=3600", &t));
    CHECK(!hub_url_expiry("https://cdn/x?NotExpires=5", &t));
    CHECK(!hub_url_expiry("https://cdn/x", &t));
    CHECK(!hub_url_expiry("https://cdn/x?Expires=abc", &t));
}

int main(void)
{
    test_validators();
    test_repo_info();
    test_tree_page();
    test_tree_skips_unshowable_entries();
    test_tree_limits();
    test_json_memory_is_bounded();
    test_error_body();
    test_numbers_and_etags();
    test_link();
    test_content_range();
    test_retry_headers();
    test_origins();
    test_resolve_location();
    test_encode_and_expiry();
    return check_finish("hub_parse");
}
