/* Unit tests of the pure parsers of hub/ (parse.h): JSON bodies, header values, URLs.
 * Expected values come from the protocol (RFC 7233 ranges, RFC 8288 links, the Hub's JSON
 * shapes in shared/design/hub-protocol.md), written out by hand. */
#include <stdlib.h>
#include <string.h>

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
    const char *bad[] = {"{\"sha\":\"abc\"}", "{\"sha\":12}", "[]", "{\"id\":\"x\"}", "not json",
                         "{\"sha\":\"" SHA1_A "\"", "{\"sha\":\"" SHA1_A "0\"}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(!hub_parse_repo_info_sha(bad[i], strlen(bad[i]), sha));
}

static hub_status parse_page(const char *json, hub_tree *tree, size_t *cap, size_t max,
                             char *why, size_t why_cap)
{
    return hub_parse_tree_page(json, strlen(json), tree, cap, max, why, why_cap);
}

static void test_tree_page(void)
{
    hub_tree tree = {0};
    size_t cap = 0;
    char why[256];
    const char *page1 =
        "[{\"type\":\"directory\",\"oid\":\"" SHA1_A "\",\"size\":0,\"path\":\"sub\"},"
        "{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":12,\"path\":\"sub/a.json\"},"
        "{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":134,\"path\":\"m.safetensors\","
        "\"lfs\":{\"oid\":\"" SHA256_A "\",\"size\":123456789012,\"pointerSize\":134}}]";
    CHECK_EQ_INT(parse_page(page1, &tree, &cap, 100, why, sizeof why), HUB_OK);
    CHECK_EQ_INT(tree.count, 3);
    CHECK(tree.entries[0].is_directory && strcmp(tree.entries[0].path, "sub") == 0);
    CHECK(!tree.entries[1].is_directory && tree.entries[1].size == 12 && !tree.entries[1].is_lfs);
    CHECK(tree.entries[2].is_lfs && tree.entries[2].size == 123456789012ULL);
    CHECK(strcmp(tree.entries[2].lfs_sha256, SHA256_A) == 0);
    CHECK(strcmp(tree.entries[2].oid, SHA1_A) == 0);

    /* a second page appends */
    const char *page2 = "[{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":1,\"path\":\"z\"}]";
    CHECK_EQ_INT(parse_page(page2, &tree, &cap, 100, why, sizeof why), HUB_OK);
    CHECK_EQ_INT(tree.count, 4);
    CHECK_EQ_INT(parse_page("[]", &tree, &cap, 100, why, sizeof why), HUB_OK);
    CHECK_EQ_INT(tree.count, 4);
    /* the entry cap counts across pages */
    CHECK_EQ_INT(parse_page(page2, &tree, &cap, 4, why, sizeof why), HUB_ERR_PROTOCOL);
    CHECK_STR_CONTAINS(why, "more than 4 entries");
    hub_tree_free(&tree);

    struct { const char *json; const char *why; } bad[] = {
        {"{}", "not a JSON array"},
        {"[{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":1,\"path\":\"../etc/passwd\"}]",
         "\"../etc/passwd\""},
        {"[{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":1,\"path\":\"/abs\"}]", "safe relative"},
        {"[{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":1,\"path\":\"a\\u0000b\"}]", "array"},
        {"[{\"type\":\"link\",\"oid\":\"" SHA1_A "\",\"size\":1,\"path\":\"a\"}]", "type"},
        {"[{\"type\":\"file\",\"oid\":\"xyz\",\"size\":1,\"path\":\"a\"}]", "oid"},
        {"[{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":-1,\"path\":\"a\"}]", "size"},
        {"[{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":1.5,\"path\":\"a\"}]", "size"},
        {"[{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":1e300,\"path\":\"a\"}]", "size"},
        {"[{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"path\":\"a\"}]", "size"},
        {"[{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":1,\"path\":\"a\",\"lfs\":{\"oid\":\"x\"}}]",
         "lfs.oid"},
        {"[{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":1,\"path\":\"ok\"},"
         "{\"type\":\"file\",\"oid\":\"" SHA1_A "\",\"size\":1,\"path\":\"a/./b\"}]", "tree entry 1"},
        {"[1]", "not an object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        hub_tree t = {0};
        size_t c = 0;
        why[0] = '\0';
        CHECK_EQ_INT(parse_page(bad[i].json, &t, &c, 100, why, sizeof why), HUB_ERR_PROTOCOL);
        CHECK_STR_CONTAINS(why, bad[i].why);
        hub_tree_free(&t);
    }

    /* deep nesting is refused before cJSON recurses */
    char deep[4096];
    size_t n = 0;
    for (; n < 1000; n++)
        deep[n] = '[';
    deep[n] = '\0';
    hub_tree t = {0};
    size_t c = 0;
    CHECK_EQ_INT(parse_page(deep, &t, &c, 100, why, sizeof why), HUB_ERR_PROTOCOL);
    hub_tree_free(&t);
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
    CHECK_EQ_INT(hub_parse_retry_after_s("7"), 7);
    CHECK_EQ_INT(hub_parse_retry_after_s(" 0 "), 0);
    CHECK_EQ_INT(hub_parse_retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT"), -1);
    CHECK_EQ_INT(hub_parse_retry_after_s("99999999999999999999"), -1);
    CHECK_EQ_INT(hub_parse_retry_after_s("9999999"), 86400);
    CHECK_EQ_INT(hub_parse_retry_after_s(NULL), -1);
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
