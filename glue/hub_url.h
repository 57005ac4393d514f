/* hub_url.h — hf://[datasets/|spaces/]ORG/NAME[@REV][/PATH] (private to glue/). */
#ifndef HUBFS_GLUE_HUB_URL_H
#define HUBFS_GLUE_HUB_URL_H

#include "hub.h"

#include <stdbool.h>
#include <stddef.h>

#define HUB_URL_SCHEME "hf://"

typedef struct hub_url {
    hub_repo_type type;
    char *repo_id;      /* "ORG/NAME" */
    char *revision;     /* decoded; "main" when the URL has none */
    char *path;         /* in the repo, without leading or trailing '/'; "" for the root */
    char *repo_text;    /* the URL as written up to NAME[@REV], for messages */
} hub_url;

/* Splits url; the repo id itself is checked by the Hub client. 0, or -1 with a message. */
int hub_url_parse(const char *url, hub_url *out, char *err, size_t errlen);
void hub_url_clear(hub_url *url);

#endif
