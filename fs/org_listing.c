/* org_listing.c — an org's repos from the Hub's listing API or, offline, the metadata. */
#include "org_listing.h"

#include "log.h"
#include "repo_meta.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Offline: the repos of ORG pinned before (their metadata), or ENOENT when none was. */
static int listing_from_metadata(fs_context *context, hub_repo_type type, const char *org, org_listing *listing)
{
    if (!context->metadata_dir)
        return ENOENT;
    int error = repo_meta_list_repos(context->metadata_dir, type, org, ORG_LISTING_MAX_NAMES, &listing->repos);
    if (!error && listing->repos.count == 0)
        error = ENOENT;
    listing->from_metadata = true;
    listing->whole = true;
    return error == ENOMEM ? ENOMEM : error ? ENOENT : 0;
}

static int listing_from_hub(fs_context *context, hub_repo_type type, const char *org, bool whole,
                            org_listing *listing)
{
    hub_error err = {0};
    hub_status status = hub_list_repos(context->hub, type, org, ORG_LISTING_MAX_NAMES,
                                       whole ? ORG_LISTING_MAX_PAGES : 1, &listing->repos, &err);
    if (status == HUB_ERR_OFFLINE)
        return listing_from_metadata(context, type, org, listing);
    const char *kind = type == HUB_REPO_DATASET ? "datasets/" : "";
    char key[160];
    snprintf(key, sizeof key, "listing %s%s", kind, org);
    if (status != HUB_OK) {
        fs_log_limited(key, "%s%s: the repo listing failed: %s: %s", kind, org, hub_status_name(status),
                       err.message);
        return status == HUB_ERR_UNAUTHORIZED ? EACCES : status == HUB_ERR_NO_MEMORY ? ENOMEM : EIO;
    }
    if (whole && !listing->repos.complete)
        fs_log_limited(key, "%s%s: has more repos than listed: `ls` shows the first %zu (each one can still "
                       "be opened by name)", kind, org, listing->repos.count);
    listing->whole = whole || listing->repos.complete;
    return 0;
}

int org_listing_fetch(fs_context *context, hub_repo_type type, const char *org, bool whole, org_listing **out)
{
    org_listing *listing = calloc(1, sizeof *listing);
    if (!listing)
        return ENOMEM;
    int error = listing_from_hub(context, type, org, whole, listing);
    if (error) {
        org_listing_free(listing);
        return error;
    }
    if (listing->repos.count > 1)
        qsort(listing->repos.names, listing->repos.count, sizeof *listing->repos.names, compare_names);
    *out = listing;
    return 0;
}

bool org_listing_pinned_before(fs_context *context, hub_repo_type type, const char *org)
{
    if (!context->metadata_dir)
        return false;
    hub_repo_list pinned;
    bool found = repo_meta_list_repos(context->metadata_dir, type, org, 1, &pinned) == 0 && pinned.count > 0;
    hub_repo_list_free(&pinned);
    return found;
}

bool org_listing_contains(const org_listing *listing, const char *name)
{
    return listing && bsearch(&name, listing->repos.names, listing->repos.count, sizeof *listing->repos.names,
                              compare_names) != NULL;
}

void org_listing_free(org_listing *listing)
{
    if (!listing)
        return;
    hub_repo_list_free(&listing->repos);
    free(listing);
}
