/* libFuzzer target: the Hub client's JSON parsers (repo info and its date, tree pages, repo
 * listing pages, error bodies).
 * The first byte picks the parser; the rest is the body. Besides not crashing or leaking,
 * every accepted tree entry must satisfy the validator it was checked with, the limits must
 * hold, what was left out must be described in printable ASCII, and every body a parser
 * accepts must be valid JSON. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"

static void check_printable(const char *text)
{
    for (const char *c = text; *c; c++)
        if (*c < 0x20 || *c >= 0x7f)
            abort();
}

static void check_tree(const hub_tree *tree, size_t max_entries)
{
    if (tree->count > max_entries || (tree->skipped == 0) != (tree->skipped_shown[0] == '\0'))
        abort();
    check_printable(tree->skipped_shown);
    check_printable(tree->truncated);
    for (size_t i = 0; i < tree->count; i++) {
        const hub_tree_entry *e = &tree->entries[i];
        if (!e->path || !hub_path_is_valid(e->path, strlen(e->path)) ||
            !hub_is_hex(e->oid, HUB_SHA_HEX_LEN) || (e->is_lfs && !hub_is_hex(e->lfs_sha256, 64)))
            abort();
    }
}

static void free_tree(hub_tree *tree)
{
    for (size_t i = 0; i < tree->count; i++)
        free(tree->entries[i].path);
    free(tree->entries);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    switch (data[0] % 5) {
    case 3: {
        int64_t date;
        if (hub_parse_repo_info_date(body, len, &date) && (date < 0 || !hub_json_is_valid(body, len)))
            abort();
        break;
    }
    case 4: {
        hub_repo_list list = {0};
        hub_repo_list_builder builder = {.list = &list, .author = "org", .max_names = 16};
        char why[256];
        if (hub_parse_repo_list_page(body, len, &builder, why, sizeof why) == HUB_OK && !hub_json_is_valid(body, len))
            abort();
        if (list.count > builder.max_names)
            abort();
        for (size_t i = 0; i < list.count; i++)
            if (!list.names[i] || !hub_repo_id_is_valid(list.names[i]) || strchr(list.names[i], '/'))
                abort();
        hub_repo_list_free(&list);
        break;
    }
    case 0: {
        char sha[HUB_SHA_HEX_LEN + 1];
        if (hub_parse_repo_info_sha(body, len, sha) &&
            (!hub_is_hex(sha, HUB_SHA_HEX_LEN) || !hub_json_is_valid(body, len)))
            abort();
        break;
    }
    case 1: {
        hub_tree tree = {0};
        char why[256];
        const size_t max_entries = 64;
        hub_tree_builder builder = {.tree = &tree, .max_entries = max_entries,
                                    .max_path_bytes = 4096};
        /* the same page twice: appending to a non-empty tree */
        if (hub_parse_tree_page(body, len, &builder, why, sizeof why) == HUB_OK) {
            if (!hub_json_is_valid(body, len))
                abort();
            hub_parse_tree_page(body, len, &builder, why, sizeof why);
        }
        check_tree(&tree, max_entries);
        if (builder.path_bytes > builder.max_path_bytes)
            abort();
        free_tree(&tree);
        break;
    }
    default: {
        char text[64];
        if (hub_parse_error_body(body, len, text, sizeof text) &&
            (strlen(text) >= sizeof text || !hub_json_is_valid(body, len)))
            abort();
        break;
    }
    }
    return 0;
}
