/* Opening a model: a single file, an unsharded directory or a sharded one (index json).
 * Only headers are read. */
#include "model.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define INDEX_FILE "model.safetensors.index.json"
#define SINGLE_FILE "model.safetensors"
#define MAX_JSON_FILE (64u << 20)

static char *join_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int add_shard(loader_model *m, const char *dir, const char *file_name, char *err,
                     size_t errlen)
{
    model_shard *grown = realloc(m->shards, (m->shard_count + 1) * sizeof *grown);
    if (!grown) return fail(err, errlen, "out of memory");
    m->shards = grown;
    model_shard *s = &m->shards[m->shard_count];
    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->path = dir ? join_path(dir, file_name) : strdup(file_name);
    const char *slash = strrchr(file_name, '/');
    s->file_name = strdup(slash ? slash + 1 : file_name);
    m->shard_count++;
    if (!s->path || !s->file_name) return fail(err, errlen, "out of memory");
    /* O_NONBLOCK: a FIFO posing as a shard must fail, not hang the open. */
    s->fd = open(s->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (s->fd < 0) return fail(err, errlen, "%s: %s", s->path, strerror(errno));
    struct stat st;
    if (fstat(s->fd, &st) != 0) return fail(err, errlen, "%s: %s", s->path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return fail(err, errlen, "%s: not a regular file", s->path);
    /* No kernel read-ahead: reading the 8-byte length and the header must not pull weight
     * bytes (on a lazy mount, a network fetch); loads drive their reads explicitly. */
    posix_fadvise(s->fd, 0, 0, POSIX_FADV_RANDOM);
    return st_read_header(s->fd, s->path, &s->header, err, errlen);
}

/* A shard named by the index must be a plain file name inside the model directory. */
static int check_shard_name(const char *name, char *err, size_t errlen)
{
    if (!*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0 ||
        strstr(name, ".."))
        return fail(err, errlen, INDEX_FILE ": shard '%s' is not a plain file name", name);
    return 0;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int open_sharded(loader_model *m, const char *index_path, char *err, size_t errlen)
{
    char *text = read_small_file(index_path, MAX_JSON_FILE, err, errlen);
    if (!text) return -1;
    cJSON *index = cJSON_Parse(text);
    free(text);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(index, "weight_map");
    const char **names = NULL;
    int rc = -1;
    if (!cJSON_IsObject(map)) {
        fail(err, errlen, "%s: not JSON with a weight_map object", index_path);
        goto done;
    }
    size_t n = (size_t)cJSON_GetArraySize(map), unique = 0;
    names = malloc((n ? n : 1) * sizeof *names);
    if (!names) { fail(err, errlen, "out of memory"); goto done; }
    for (const cJSON *e = map->child; e; e = e->next) {
        if (!cJSON_IsString(e)) {
            fail(err, errlen, "%s: weight_map value of '%s' is not a file name", index_path, e->string);
            goto done;
        }
        if (check_shard_name(e->valuestring, err, errlen) != 0) goto done;
        names[unique++] = e->valuestring;
    }
    if (unique > 1) qsort(names, unique, sizeof *names, compare_strings);
    size_t kept = 0;
    for (size_t i = 0; i < unique; i++)
        if (kept == 0 || strcmp(names[kept - 1], names[i]) != 0) names[kept++] = names[i];
    for (size_t i = 0; i < kept; i++)
        if (add_shard(m, m->dir, names[i], err, errlen) != 0) goto done;
    for (const cJSON *e = map->child; e; e = e->next) {
        const char **found = bsearch(&e->valuestring, names, kept, sizeof *names, compare_strings);
        const model_shard *s = &m->shards[found - names];
        if (!st_find(&s->header, e->string)) {
            fail(err, errlen, "%s: weight_map puts '%s' in %s, which has no such tensor",
                 index_path, e->string, s->file_name);
            goto done;
        }
    }
    rc = 0;
done:
    free(names);
    cJSON_Delete(index);
    return rc;
}

static int collect_tensors(loader_model *m, char *err, size_t errlen)
{
    size_t total = 0;
    for (size_t s = 0; s < m->shard_count; s++) total += m->shards[s].header.count;
    m->tensors = calloc(total ? total : 1, sizeof *m->tensors);
    if (!m->tensors) return fail(err, errlen, "out of memory");
    for (size_t s = 0; s < m->shard_count; s++) {
        const st_header *h = &m->shards[s].header;
        for (size_t i = 0; i < h->count; i++) {
            for (size_t other = 0; other < s; other++)
                if (st_find(&m->shards[other].header, h->tensors[i].name))
                    return fail(err, errlen, "tensor '%s' is in both %s and %s",
                                h->tensors[i].name, m->shards[other].file_name,
                                m->shards[s].file_name);
            m->tensors[m->count++] = (model_tensor){&h->tensors[i], s};
        }
    }
    return 0;
}

int model_read_config(const loader_model *m, cJSON **config, char *err, size_t errlen)
{
    *config = NULL;
    char *path = join_path(m->dir, "config.json");
    if (!path) return fail(err, errlen, "out of memory");
    int rc = 0;
    if (access(path, F_OK) == 0) {
        char *text = read_small_file(path, MAX_JSON_FILE, err, errlen);
        *config = text ? cJSON_Parse(text) : NULL;
        if (text && !cJSON_IsObject(*config))
            fail(err, errlen, "%s: not a JSON object", path);
        if (!cJSON_IsObject(*config)) {
            cJSON_Delete(*config);
            *config = NULL;
            rc = -1;
        }
        free(text);
    }
    free(path);
    return rc;
}

static int open_model(loader_model *m, const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) != 0) return fail(err, errlen, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        m->dir = strdup(path);
        if (!m->dir) return fail(err, errlen, "out of memory");
        char *index = join_path(path, INDEX_FILE), *single = join_path(path, SINGLE_FILE);
        int rc;
        if (!index || !single) rc = fail(err, errlen, "out of memory");
        else if (access(index, F_OK) == 0) rc = open_sharded(m, index, err, errlen);
        else if (access(single, F_OK) == 0) rc = add_shard(m, path, SINGLE_FILE, err, errlen);
        else rc = fail(err, errlen, "%s: no " INDEX_FILE " or " SINGLE_FILE " in this directory", path);
        free(index);
        free(single);
        if (rc != 0) return -1;
    } else {
        const char *slash = strrchr(path, '/');
        m->dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
        if (!m->dir) return fail(err, errlen, "out of memory");
        if (add_shard(m, NULL, path, err, errlen) != 0) return -1;
    }
    return collect_tensors(m, err, errlen);
}

int loader_model_open(const char *path, loader_model **out, char *err, size_t errlen)
{
    *out = NULL;
    loader_model *m = calloc(1, sizeof *m);
    if (!m) return fail(err, errlen, "out of memory");
    if (open_model(m, path, err, errlen) != 0) {
        loader_model_close(m);
        return -1;
    }
    *out = m;
    return 0;
}

void loader_model_close(loader_model *model)
{
    if (!model) return;
    for (size_t s = 0; s < model->shard_count; s++) {
        model_shard *shard = &model->shards[s];
        if (shard->fd >= 0) close(shard->fd);
        st_header_free(&shard->header);
        free(shard->path);
        free(shard->file_name);
    }
    free(model->shards);
    free(model->tensors);
    free(model->dir);
    free(model);
}

size_t loader_model_tensor_count(const loader_model *model) { return model->count; }

void loader_model_tensor(const loader_model *model, size_t index, loader_tensor_info *out)
{
    const model_tensor *t = &model->tensors[index];
    const model_shard *s = &model->shards[t->shard];
    *out = (loader_tensor_info){
        .name = t->st->name, .dtype = t->st->dtype->name, .ndim = t->st->ndim,
        .shape = t->st->shape, .shard = s->file_name,
        .offset = s->header.data_start + t->st->begin, .nbytes = t->st->end - t->st->begin,
    };
}

void loader_model_data_offsets(const loader_model *model, size_t index, uint64_t *begin,
                               uint64_t *end)
{
    *begin = model->tensors[index].st->begin;
    *end = model->tensors[index].st->end;
}
