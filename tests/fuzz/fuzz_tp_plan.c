/* Fuzzes the tensor-parallel plan, which comes from repo content (config.json). Input: the
 * bytes before the first NUL are both a pattern and a JSON document; the bytes after it are
 * tensor names, one per line. Checks:
 * - tp_pattern_match agrees with the dynamic-programming reference (on inputs small enough
 *   for it) and never backtracks: fuzz.sh's -timeout turns a slow match into a crash;
 * - the JSON, as a plan and as a config.json, either fails with a message or gives a plan
 *   whose every slice lies inside its tensor, for every rank of several world sizes. */
#include "../loader/pattern_reference.h"
#include "plan.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define REFERENCE_MAX_CELLS (1u << 16)

static const char *const fixed_names[] = {
    "model.embed_tokens.weight",           "lm_head.weight",
    "model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.bias",
    "model.layers.0.mlp.down_proj.weight", "model.layers.0.mlp.down_proj.bias",
    "transformer.wte.weight",              "model.norm.weight",
};

/* A few (world size, rank) pairs, not all: each slice matches the name against every rule. */
static void check_slices(const tp_plan *plan, const char *name)
{
    static const uint64_t shape[2] = {64, 32}, heads_shape[2] = {8, 16};
    static const struct { size_t ndim; const uint64_t *shape; } tensors[] = {
        {2, shape}, {1, shape}, {0, NULL}, {2, heads_shape}};
    static const unsigned ranks[][2] = {{2, 1}, {8, 0}, {8, 7}};
    char err[1024];
    for (size_t t = 0; t < sizeof tensors / sizeof tensors[0]; t++)
        for (size_t r = 0; r < sizeof ranks / sizeof ranks[0]; r++) {
            tp_slice s;
            err[0] = '\0';
            int rc = tp_plan_slice(plan, name, tensors[t].ndim, tensors[t].shape, ranks[r][0],
                                   ranks[r][1], &s, err, sizeof err);
            if (rc != 0 && err[0] == '\0') abort();
            if (rc == 0 && s.dim >= 0 &&
                ((size_t)s.dim >= tensors[t].ndim || s.count == 0 ||
                 s.start + s.count > tensors[t].shape[s.dim]))
                abort();
        }
}

static void check_plan(const tp_plan *plan, char **names, size_t count)
{
    for (size_t i = 0; i < count; i++) check_slices(plan, names[i]);
    for (size_t i = 0; i < sizeof fixed_names / sizeof fixed_names[0]; i++)
        check_slices(plan, fixed_names[i]);
}

static void fuzz_json(const char *text, size_t len, char **names, size_t count)
{
    cJSON *json = cJSON_ParseWithLength(text, len);
    if (!json) return;
    char err[1024];
    tp_plan plan;
    err[0] = '\0';
    if (tp_plan_from_json(json, &plan, err, sizeof err) == 0) {
        if (plan.count > TP_PLAN_MAX_ENTRIES) abort();
        check_plan(&plan, names, count);
        tp_plan_free(&plan);
    } else if (err[0] == '\0') {
        abort();
    }
    if (tp_plan_resolve(json, NULL, &plan, err, sizeof err) == 0) { /* as a config.json */
        check_plan(&plan, names, count);
        tp_plan_free(&plan);
    }
    cJSON_Delete(json);
}

/* Splits `text` (len bytes) into NUL-terminated lines; returns how many. */
static size_t split_lines(const uint8_t *text, size_t len, char ***out)
{
    size_t count = 1;
    for (size_t i = 0; i < len; i++) count += text[i] == '\n';
    char **lines = calloc(count, sizeof *lines);
    if (!lines) abort();
    for (size_t i = 0, start = 0, k = 0; i <= len; i++)
        if (i == len || text[i] == '\n') {
            lines[k] = strndup((const char *)text + start, i - start);
            if (!lines[k++]) abort();
            start = i + 1;
        }
    *out = lines;
    return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    size_t head = nul ? (size_t)(nul - data) : size;
    char *pattern = strndup((const char *)data, head), **names = NULL;
    if (!pattern) abort();
    size_t count = nul ? split_lines(nul + 1, size - head - 1, &names) : 0;
    for (size_t i = 0; i < count; i++) {
        bool matched = tp_pattern_match(pattern, names[i]);
        if ((head + 1) * (strlen(names[i]) + 1) <= REFERENCE_MAX_CELLS &&
            matched != reference_pattern_match(pattern, names[i]))
            abort();
    }
    fuzz_json(pattern, head, names, count);
    for (size_t i = 0; i < count; i++) free(names[i]);
    free(names);
    free(pattern);
    return 0;
}
