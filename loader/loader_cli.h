/* loader_cli.h — the `hubfs inspect` and `hubfs load` subcommands. */
#ifndef HUBFS_LOADER_CLI_H
#define HUBFS_LOADER_CLI_H

#include "loader.h"

#include <stddef.h>

/* Opens the model at PATH as loader_model_open does; the hubfs command passes one that also
 * opens hf:// URLs (glue/sources.h), so that the loader knows nothing of the Hub. NULL:
 * loader_model_open. */
typedef int (*loader_cli_opener)(const char *path, loader_model **out, char *err, size_t errlen);

int loader_cli_inspect(int argc, char **argv, loader_cli_opener open_model);
/* What `hubfs inspect --json` prints: every tensor (name, dtype, shape, bytes, shard, offset,
 * data_offsets), totals per dtype, parameters and bytes. malloc'd (free it); NULL when out of
 * memory. */
char *loader_inspect_json(const loader_model *model);
int loader_cli_load(int argc, char **argv, loader_cli_opener open_model);

#endif
