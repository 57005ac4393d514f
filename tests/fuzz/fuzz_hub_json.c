/* libFuzzer target: the Hub client's JSON parsers (repo info, tree pages, error bodies).
 * The first byte picks the parser; the rest is the body. Besides not crashing or leaking,
 * every accepted tree entry must satisfy the validator it was checked with. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"

static void check_tree(const hub_tree *tree, size_t max_entries)
{
    if (tree->count > max_entries)
        abort();
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
    switch (data[0] % 3) {
    case 0: {
        char sha[HUB_SHA_HEX_LEN + 1];
        if (hub_parse_repo_info_sha(body, len, sha) && !hub_is_hex(sha, HUB_SHA_HEX_LEN))
            abort();
        break;
    }
    case 1: {
        hub_tree tree = {0};
        size_t capacity = 0;
        char why[256];
        const size_t max_entries = 64;
        /* the same page twice: appending to a non-empty tree */
        if (hub_parse_tree_page(body, len, &tree, &capacity, max_entries, why, sizeof why) == HUB_OK)
            hub_parse_tree_page(body, len, &tree, &capacity, max_entries, why, sizeof why);
        check_tree(&tree, max_entries);
        free_tree(&tree);
        break;
    }
    default: {
        char text[64];
        if (hub_parse_error_body(body, len, text, sizeof text) && strlen(text) >= sizeof text)
            abort();
        break;
    }
    }
    return 0;
}
