/* Unit tests of the parsers behind the org listings and the commits' dates (parse.h): ISO 8601
 * dates (expected seconds from Python's calendar.timegm), repo-info "lastModified", and the
 * pages of GET /api/models?author=ORG. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "parse.h"

static bool date_of(const char *text, int64_t *seconds)
{
    return hub_parse_iso8601_utc(text, strlen(text), seconds);
}

static void test_dates(void)
{
    static const struct {
        const char *text;
        int64_t seconds;
    } good[] = {
        {"1970-01-01T00:00:00Z", 0},
        {"2021-06-01T12:34:56.000Z", 1622550896},
        {"2021-06-01T12:34:56Z", 1622550896},
        {"2021-06-01T12:34:56.123456789Z", 1622550896},
        {"2000-02-29T00:00:00.000Z", 951782400},
        {"2024-12-31T23:59:59.999Z", 1735689599},
        {"2100-03-01T00:00:00Z", 4107542400},
        {"9999-12-31T23:59:59Z", 253402300799},
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        int64_t seconds = -1;
        CHECK(date_of(good[i].text, &seconds));
        CHECK_EQ_INT(seconds, good[i].seconds);
    }
    static const char *const bad[] = {
        "", "2021-06-01", "2021-06-01T12:34:56", "2021-06-01T12:34:56+00:00", "2021-06-01 12:34:56Z",
        "2021-06-01T12:34:56.Z", "2021-06-01T12:34:56ZZ", "2021-02-29T00:00:00Z", "2100-02-29T00:00:00Z",
        "2021-13-01T00:00:00Z", "2021-00-10T00:00:00Z", "2021-06-31T00:00:00Z", "2021-06-01T24:00:00Z",
        "2021-06-01T12:60:00Z", "1969-12-31T23:59:59Z", "-021-06-01T12:34:56Z", "2021-06-01T12:34:5xZ",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int64_t seconds = 0;
        if (date_of(bad[i], &seconds))
            fprintf(stderr, "accepted: %s\n", bad[i]);
        CHECK(!date_of(bad[i], &seconds));
    }
    int64_t seconds;
    CHECK(!hub_parse_iso8601_utc("2021-06-01T12:34:56Z", 19, &seconds));   /* cut short */
}

static void test_repo_info_date(void)
{
    const char *info = "{\"id\":\"o/n\",\"sha\":\"0123456789abcdef0123456789abcdef01234567\","
                       "\"lastModified\":\"2023-07-18T16:21:35.000Z\",\"createdAt\":\"2020-01-01T00:00:00.000Z\"}";
    int64_t seconds = 0;
    CHECK(hub_parse_repo_info_date(info, strlen(info), &seconds));
    CHECK_EQ_INT(seconds, 1689697295);
    const char *no_date = "{\"sha\":\"0123456789abcdef0123456789abcdef01234567\"}";
    CHECK(!hub_parse_repo_info_date(no_date, strlen(no_date), &seconds));
    const char *not_string = "{\"lastModified\":1689697295}";
    CHECK(!hub_parse_repo_info_date(not_string, strlen(not_string), &seconds));
    const char *not_json = "{\"lastModified\":\"2023-07-18T16:21:35.000Z\"";
    CHECK(!hub_parse_repo_info_date(not_json, strlen(not_json), &seconds));
}

static hub_status parse_page(hub_repo_list_builder *builder, const char *json, char *why, size_t why_cap)
{
    return hub_parse_repo_list_page(json, strlen(json), builder, why, why_cap);
}

static void test_listing_pages(void)
{
    hub_repo_list list = {0};
    hub_repo_list_builder builder = {.list = &list, .author = "Meta-Llama", .max_names = 100};
    char why[256];
    CHECK(parse_page(&builder,
                     "[{\"_id\":\"1\",\"id\":\"meta-llama/Llama-2-7b-hf\",\"likes\":5},"
                     " {\"id\":\"meta-llama/Llama-2-13b\",\"tags\":[\"a\",{\"b\":[1]}]},"
                     " {\"id\":\"someone-else/model\"},"          /* another author's */
                     " {\"id\":\"meta-llama/bad--name\"},"        /* no valid repo name: */
                     " {\"id\":\"meta-llama/..\"},"
                     " {\"id\":\"meta-llama/a b\"},"
                     " {\"id\":\"meta-llama/nul\\u0000ed\"},"
                     " {\"id\":\"meta-llama\"},"
                     " {\"id\":42}, [\"not an object\"], \"text\", null,"
                     " {\"modelId\":\"meta-llama/no-id\"}]",
                     why, sizeof why) == HUB_OK);
    CHECK_EQ_INT(list.count, 2);
    CHECK(list.count == 2 && strcmp(list.names[0], "Llama-2-7b-hf") == 0 && strcmp(list.names[1], "Llama-2-13b") == 0);
    CHECK_EQ_INT(builder.skipped, 11);
    CHECK(parse_page(&builder, "[]", why, sizeof why) == HUB_OK);      /* an empty last page */
    CHECK(parse_page(&builder, " [ {\"id\":\"META-LLAMA/third\"} ] ", why, sizeof why) == HUB_OK);
    CHECK_EQ_INT(list.count, 3);
    CHECK(parse_page(&builder, "{\"error\":\"x\"}", why, sizeof why) == HUB_ERR_PROTOCOL);
    CHECK_STR_CONTAINS(why, "not a JSON array");
    CHECK(parse_page(&builder, "[{\"id\":\"meta-llama/x\"}", why, sizeof why) == HUB_ERR_PROTOCOL);
    CHECK_STR_CONTAINS(why, "not valid JSON");
    CHECK_EQ_INT(list.count, 3);
    CHECK(!builder.cut);
    hub_repo_list_free(&list);
    CHECK(list.names == NULL && list.count == 0);
}

static void test_listing_limit(void)
{
    hub_repo_list list = {0};
    hub_repo_list_builder builder = {.list = &list, .author = "o", .max_names = 3};
    char why[64];
    const char *page = "[{\"id\":\"o/a\"},{\"id\":\"o/b\"},{\"id\":\"o/c\"},{\"id\":\"o/d\"},{\"id\":\"o/e\"}]";
    CHECK(hub_parse_repo_list_page(page, strlen(page), &builder, why, sizeof why) == HUB_OK);
    CHECK_EQ_INT(list.count, 3);
    CHECK(builder.cut);
    CHECK(hub_parse_repo_list_page(page, strlen(page), &builder, why, sizeof why) == HUB_OK);
    CHECK_EQ_INT(list.count, 3);          /* cut: nothing more is kept */
    hub_repo_list_free(&list);
}

int main(void)
{
    test_dates();
    test_repo_info_date();
    test_listing_pages();
    test_listing_limit();
    return check_finish("hub_listing_parse");
}
