/* Opening a model from a source: a single file, an unsharded directory or a sharded one (index
 * json). Only headers are read, every shard's at once: on a remote source each costs a round
 * trip, so they overlap. */
#include "model.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define INDEX_FILE "model.safetensors.index.json"
#define SINGLE_FILE "model.safetensors"
#define CONFIG_FILE "config.json"
#define MAX_JSON_FILE (64u << 20)
#define MAX_HEADER_THREADS 16u

/* The whole of a small file of the source, NUL-terminated, or NULL with a message. */
static char *read_source_file(loader_source *source, const char *name, size_t max, char *err,
                              size_t errlen)
{
    char *path = join_location(source->location, name), *text = NULL, why[LOADER_ERR_LEN];
    loader_file *file = NULL;
    if (!path) {
        fail(err, errlen, "out of memory");
    } else if (source->ops->open(source, name, &file, err, errlen) != 0) {
        file = NULL;
    } else if (file->size > max) {
        fail(err, errlen, "%s: %llu bytes is more than the %zu allowed", path,
             (unsigned long long)file->size, max);
    } else if ((text = malloc((size_t)file->size + 1)) == NULL) {
        fail(err, errlen, "%s: out of memory", path);
    } else if (file->ops->read_at(file, 0, text, (size_t)file->size, why, sizeof why) != 0) {
        fail(err, errlen, "%s: %s", path, why);
        free(text);
        text = NULL;
    } else {
        text[file->size] = '\0';
    }
    if (file) file->ops->close(file);
    free(path);
    return text;
}

static int add_shard_entries(loader_model *m, const char *const *names, size_t count, char *err,
                             size_t errlen)
{
    m->shards = calloc(count ? count : 1, sizeof *m->shards);
    if (!m->shards) return fail(err, errlen, "out of memory");
    for (size_t i = 0; i < count; i++) {
        model_shard *s = &m->shards[m->shard_count++];
        s->file_name = strdup(names[i]);
        s->path = join_location(m->source->location, names[i]);
        if (!s->file_name || !s->path) return fail(err, errlen, "out of memory");
    }
    return 0;
}

typedef struct shard_result {
    int rc;
    char err[LOADER_ERR_LEN];
} shard_result;

typedef struct header_reading {
    loader_model *model;
    shard_result *results;
    atomic_size_t next;
} header_reading;

static void *read_headers(void *arg)
{
    header_reading *h = arg;
    loader_model *m = h->model;
    for (size_t i; (i = atomic_fetch_add(&h->next, 1)) < m->shard_count;) {
        model_shard *s = &m->shards[i];
        shard_result *r = &h->results[i];
        r->rc = m->source->ops->open(m->source, s->file_name, &s->file, r->err, sizeof r->err);
        if (r->rc != 0) s->file = NULL;
        else r->rc = st_read_header(s->file, s->path, &s->header, r->err, sizeof r->err);
    }
    return NULL;
}

/* Opens every shard and reads its header, several at once; the first failing shard (in
 * order) gives the message. */
static int open_shards(loader_model *m, char *err, size_t errlen)
{
    header_reading h = {.model = m, .results = calloc(m->shard_count, sizeof *h.results)};
    if (!h.results) return fail(err, errlen, "out of memory");
    atomic_init(&h.next, 0);
    size_t helpers = m->shard_count < MAX_HEADER_THREADS ? m->shard_count : MAX_HEADER_THREADS;
    pthread_t ids[MAX_HEADER_THREADS];
    size_t started = 0;
    while (started + 1 < helpers && pthread_create(&ids[started], NULL, read_headers, &h) == 0)
        started++;
    read_headers(&h); /* this thread too, so a refused thread only slows things down */
    for (size_t i = 0; i < started; i++) pthread_join(ids[i], NULL);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < m->shard_count; i++)
        if (h.results[i].rc != 0) rc = fail(err, errlen, "%s", h.results[i].err);
    free(h.results);
    return rc;
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

static int open_sharded(loader_model *m, char *err, size_t errlen)
{
    char *index_path = join_location(m->source->location, INDEX_FILE);
    if (!index_path) return fail(err, errlen, "out of memory");
    char *text = read_source_file(m->source, INDEX_FILE, MAX_JSON_FILE, err, errlen);
    if (!text) {
        free(index_path);
        return -1;
    }
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
    if (add_shard_entries(m, names, kept, err, errlen) != 0 || open_shards(m, err, errlen) != 0)
        goto done;
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
    free(index_path);
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
    int found = m->source->ops->contains(m->source, CONFIG_FILE, err, errlen);
    if (found <= 0) return found;
    char *text = read_source_file(m->source, CONFIG_FILE, MAX_JSON_FILE, err, errlen);
    if (!text) return -1;
    *config = cJSON_Parse(text);
    free(text);
    if (cJSON_IsObject(*config)) return 0;
    cJSON_Delete(*config);
    *config = NULL;
    char *path = join_location(m->source->location, CONFIG_FILE);
    fail(err, errlen, "%s: not a JSON object", path ? path : CONFIG_FILE);
    free(path);
    return -1;
}

typedef struct name_list {
    char text[256];
    size_t count;
} name_list;

static void note_safetensors_file(void *ctx, const char *name, uint64_t size)
{
    (void)size;
    name_list *l = ctx;
    size_t n = strlen(name), used = strlen(l->text);
    if (n < 12 || strcmp(name + n - 12, ".safetensors") != 0) return;
    if (l->count++ < 4)
        snprintf(l->text + used, sizeof l->text - used, "%s%s", used ? ", " : "", name);
}

/* No model where one was expected: says so, and which .safetensors files are there. */
static int no_model_here(loader_model *m, char *err, size_t errlen)
{
    const char *where = m->source->location[0] ? m->source->location : ".";
    name_list found = {"", 0};
    char why[LOADER_ERR_LEN];
    if (m->source->ops->list(m->source, note_safetensors_file, &found, why, sizeof why) != 0 ||
        found.count == 0)
        return fail(err, errlen, "%s: no " INDEX_FILE " or " SINGLE_FILE " in this directory",
                    where);
    return fail(err, errlen, "%s: no " INDEX_FILE " or " SINGLE_FILE " in this directory; it "
                "holds %s%s: give the path of one file to open it alone", where, found.text,
                found.count > 4 ? ", ..." : "");
}

static int open_model(loader_model *m, const char *file, char *err, size_t errlen)
{
    int rc = -1;
    if (file) {
        rc = add_shard_entries(m, &file, 1, err, errlen) || open_shards(m, err, errlen) ? -1 : 0;
    } else {
        int sharded = m->source->ops->contains(m->source, INDEX_FILE, err, errlen), single = 0;
        if (sharded == 0) single = m->source->ops->contains(m->source, SINGLE_FILE, err, errlen);
        const char *name = SINGLE_FILE;
        if (sharded < 0 || single < 0) rc = -1;
        else if (sharded) rc = open_sharded(m, err, errlen);
        else if (single) rc = add_shard_entries(m, &name, 1, err, errlen) || open_shards(m, err, errlen) ? -1 : 0;
        else rc = no_model_here(m, err, errlen);
    }
    return rc != 0 ? -1 : collect_tensors(m, err, errlen);
}

int loader_model_open_source(loader_source *source, const char *file, loader_model **out,
                             char *err, size_t errlen)
{
    *out = NULL;
    loader_model *m = calloc(1, sizeof *m);
    if (!m) {
        loader_source_destroy(source);
        return fail(err, errlen, "out of memory");
    }
    m->source = source;
    if (open_model(m, file, err, errlen) != 0) {
        loader_model_close(m);
        return -1;
    }
    *out = m;
    return 0;
}

int loader_model_open(const char *path, loader_model **out, char *err, size_t errlen)
{
    return loader_model_open_hooked(path, NULL, out, err, errlen);
}

int loader_model_open_hooked(const char *path, loader_plan_hook hook, loader_model **out, char *err,
                             size_t errlen)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) return fail(err, errlen, "%s: %s", path, strerror(errno));
    const char *slash = strrchr(path, '/'), *file = NULL;
    char *dir;
    if (S_ISDIR(st.st_mode)) {
        dir = strdup(path);
    } else {
        file = slash ? slash + 1 : path;
        dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup("");
    }
    if (!dir) return fail(err, errlen, "out of memory");
    loader_source *source;
    int rc = loader_source_open_local_hooked(dir, hook, &source, err, errlen);
    free(dir);
    return rc != 0 ? -1 : loader_model_open_source(source, file, out, err, errlen);
}

void loader_model_close(loader_model *model)
{
    if (!model) return;
    for (size_t s = 0; s < model->shard_count; s++) {
        model_shard *shard = &model->shards[s];
        if (shard->file) shard->file->ops->close(shard->file);
        st_header_free(&shard->header);
        free(shard->path);
        free(shard->file_name);
    }
    free(model->shards);
    free(model->tensors);
    loader_source_destroy(model->source);
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
