/* org_listing.h — the repos of one organisation or user (of one repo type): what /MNT/ORG and
 * /MNT/datasets/ORG list, and whether ORG exists at all (it does when it has a repo the token
 * can see). From the Hub's listing API (hub_list_repos) or, offline, from the metadata of the
 * repos pinned before (repo_meta.h). */
#ifndef HUBFS_ORG_LISTING_H
#define HUBFS_ORG_LISTING_H

#include "context.h"

#define ORG_LISTING_MAX_NAMES 10000   /* `ls` of an org with more shows the first ones */
#define ORG_LISTING_MAX_PAGES 100

typedef struct org_listing {
    hub_repo_list repos;         /* names sorted (strcmp) */
    bool whole;                  /* every page read that the limits allow (not just the first,
                                    unless it was the only one) */
    bool from_metadata;          /* offline: the repos pinned before, not the Hub's word */
} org_listing;

/* ORG's repos of type: the first page only (whole false: enough to tell whether ORG has any),
 * or all of them up to the limits above. Returns 0 with *out set (maybe empty), or an errno
 * value: ENOENT offline with nothing pinned before under ORG, EACCES when the token was refused,
 * EIO when the Hub failed; the log says why (once per org and minute). */
int org_listing_fetch(fs_context *context, hub_repo_type type, const char *org, bool whole,
                      org_listing **out);

/* Whether a repo of ORG (of type) was pinned before in this cache's metadata. */
bool org_listing_pinned_before(fs_context *context, hub_repo_type type, const char *org);

bool org_listing_contains(const org_listing *listing, const char *name);
void org_listing_free(org_listing *listing);

#endif
