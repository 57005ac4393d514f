/* model.h — a model's shards and tensors (private to the loader). */
#ifndef HUBFS_LOADER_MODEL_H
#define HUBFS_LOADER_MODEL_H

#include "loader.h"
#include "safetensors.h"
#include "source.h"

#include <cjson/cJSON.h>

typedef struct model_shard {
    char *file_name;         /* its name in the source */
    char *path;              /* for messages: "<location>/<file_name>" */
    loader_file *file;
    st_header header;
} model_shard;

typedef struct model_tensor {
    const st_tensor *st;
    size_t shard;
} model_tensor;

struct loader_model {
    loader_source *source;   /* owned; holds config.json when there is one */
    model_shard *shards;
    size_t shard_count;
    model_tensor *tensors;   /* by shard, then file offset */
    size_t count;
};

/* Parses the model's config.json (its TP plan and head counts) into *config, or leaves it
 * NULL when there is none. Only loading needs it: inspect reads nothing but headers. */
int model_read_config(const loader_model *m, cJSON **config, char *err, size_t errlen);

#endif
