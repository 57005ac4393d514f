/* Tensor-parallel plans. Patterns use `*` for one dotted component (a layer index) and are
 * matched against names without the "model." prefix and ".weight"/".bias" suffix, so that
 * HF's base_model_tp_plan keys and checkpoint names meet. */
#include "plan.h"
#include "util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct style_alias {
    const char *name;
    tp_style style;
} style_alias;

/* HF's "local_*" and "*_rep" variants differ only in how activations are gathered, not in
 * how weights are split; "gather", "sequence_parallel" and the replicated ones leave weights
 * whole. */
static const style_alias style_aliases[] = {
    {"colwise", TP_COLWISE},          {"colwise_rep", TP_COLWISE},
    {"local_colwise", TP_COLWISE},    {"rowwise", TP_ROWWISE},
    {"rowwise_rep", TP_ROWWISE},      {"local_rowwise", TP_ROWWISE},
    {"vocab", TP_VOCAB},              {"vocab_parallel", TP_VOCAB},
    {"replicate", TP_REPLICATE},      {"replicated", TP_REPLICATE},
    {"replicated_with_grad_allreduce", TP_REPLICATE},
    {"gather", TP_REPLICATE},         {"sequence_parallel", TP_REPLICATE},
};

static const struct { const char *pattern; tp_style style; } llama_rules[] = {
    {"layers.*.self_attn.q_proj", TP_COLWISE}, {"layers.*.self_attn.k_proj", TP_COLWISE},
    {"layers.*.self_attn.v_proj", TP_COLWISE}, {"layers.*.self_attn.o_proj", TP_ROWWISE},
    {"layers.*.mlp.gate_proj", TP_COLWISE},    {"layers.*.mlp.up_proj", TP_COLWISE},
    {"layers.*.mlp.down_proj", TP_ROWWISE},    {"embed_tokens", TP_VOCAB},
    {"lm_head", TP_VOCAB},
};

int tp_style_parse(const char *name, tp_style *out, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof style_aliases / sizeof style_aliases[0]; i++)
        if (strcmp(style_aliases[i].name, name) == 0) {
            *out = style_aliases[i].style;
            return 0;
        }
    return fail(err, errlen, "tensor-parallel style '%s' is not supported (supported: colwise, "
                "rowwise, vocab, replicate and their local_/_rep variants)", name);
}

const char *tp_style_name(tp_style style)
{
    switch (style) {
    case TP_COLWISE: return "colwise";
    case TP_ROWWISE: return "rowwise";
    case TP_VOCAB: return "vocab";
    default: return "replicate";
    }
}

static bool strip_suffix(char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    if (n <= k || strcmp(s + n - k, suffix) != 0) return false;
    s[n - k] = '\0';
    return true;
}

/* The name without "model." and ".weight"/".bias"; *is_bias tells which suffix went. */
static char *normalize(const char *name, bool *is_bias)
{
    if (strncmp(name, "model.", 6) == 0) name += 6;
    char *s = strdup(name);
    if (!s) return NULL;
    bool bias = strip_suffix(s, ".bias");
    if (!bias) strip_suffix(s, ".weight");
    if (is_bias) *is_bias = bias;
    return s;
}

/* `*` matches one or more characters other than '.'. */
static bool glob_match(const char *pattern, const char *name)
{
    for (; *pattern; pattern++, name++) {
        if (*pattern == '*') {
            if (!*name || *name == '.') return false;
            for (const char *end = name + 1;; end++) {
                if (glob_match(pattern + 1, end)) return true;
                if (!*end || *end == '.') return false;
            }
        }
        if (*pattern != *name) return false;
    }
    return *name == '\0';
}

static int add_rule(tp_plan *plan, const char *pattern, tp_style style, char *err, size_t errlen)
{
    tp_rule *grown = realloc(plan->rules, (plan->count + 1) * sizeof *grown);
    if (!grown) return fail(err, errlen, "out of memory");
    plan->rules = grown;
    char *normalized = normalize(pattern, NULL);
    if (!normalized) return fail(err, errlen, "out of memory");
    plan->rules[plan->count++] = (tp_rule){normalized, style};
    return 0;
}

int tp_plan_builtin(tp_plan *plan, char *err, size_t errlen)
{
    memset(plan, 0, sizeof *plan);
    plan->source = "built-in Llama rules";
    for (size_t i = 0; i < sizeof llama_rules / sizeof llama_rules[0]; i++)
        if (add_rule(plan, llama_rules[i].pattern, llama_rules[i].style, err, errlen) != 0) {
            tp_plan_free(plan);
            return -1;
        }
    return 0;
}

int tp_plan_from_json(const cJSON *object, tp_plan *plan, char *err, size_t errlen)
{
    memset(plan, 0, sizeof *plan);
    if (!cJSON_IsObject(object))
        return fail(err, errlen, "the plan is not a JSON object of \"pattern\": \"style\"");
    for (const cJSON *e = object->child; e; e = e->next) {
        tp_style style = TP_REPLICATE;
        char why[300];
        if (!cJSON_IsString(e))
            return tp_plan_free(plan), fail(err, errlen, "plan entry '%s': style is not a string",
                                            e->string);
        if (tp_style_parse(e->valuestring, &style, why, sizeof why) != 0)
            return tp_plan_free(plan), fail(err, errlen, "plan entry '%s': %s", e->string, why);
        if (add_rule(plan, e->string, style, err, errlen) != 0)
            return tp_plan_free(plan), -1;
    }
    return 0;
}

static uint64_t config_uint(const cJSON *config, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(config, key);
    return cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble < 1e9 ? (uint64_t)v->valuedouble : 0;
}

int tp_plan_resolve(const cJSON *config, const char *plan_path, tp_plan *plan, char *err,
                    size_t errlen)
{
    const cJSON *config_plan = cJSON_GetObjectItemCaseSensitive(config, "base_model_tp_plan");
    char why[512];
    int rc;
    if (plan_path) {
        char *text = read_small_file(plan_path, 16u << 20, err, errlen);
        if (!text) return -1;
        cJSON *json = cJSON_Parse(text);
        free(text);
        rc = json ? tp_plan_from_json(json, plan, why, sizeof why)
                  : fail(why, sizeof why, "not valid JSON");
        cJSON_Delete(json);
        if (rc != 0) return fail(err, errlen, "%s: %s", plan_path, why);
        plan->source = "plan file";
    } else if (config_plan && !cJSON_IsNull(config_plan)) {
        if (tp_plan_from_json(config_plan, plan, why, sizeof why) != 0)
            return fail(err, errlen, "config.json base_model_tp_plan: %s", why);
        plan->source = "config.json";
    } else if (tp_plan_builtin(plan, err, errlen) != 0) {
        return -1;
    }
    plan->heads = config_uint(config, "num_attention_heads");
    plan->kv_heads = config_uint(config, "num_key_value_heads");
    if (!plan->kv_heads) plan->kv_heads = plan->heads;
    return 0;
}

tp_style tp_plan_style(const tp_plan *plan, const char *name)
{
    bool is_bias;
    char *normalized = normalize(name, &is_bias);
    tp_style style = TP_REPLICATE;
    for (size_t i = 0; normalized && i < plan->count; i++)
        if (glob_match(plan->rules[i].pattern, normalized)) {
            style = plan->rules[i].style;
            break;
        }
    free(normalized);
    return style;
}

typedef enum head_role { HEADS_NONE, HEADS_QUERY, HEADS_KV } head_role;

static head_role role_of(const char *name)
{
    char *n = normalize(name, NULL);
    const char *last = n ? strrchr(n, '.') : NULL;
    last = last ? last + 1 : n;
    head_role role = HEADS_NONE;
    if (last && (strcmp(last, "q_proj") == 0 || strcmp(last, "o_proj") == 0)) role = HEADS_QUERY;
    if (last && (strcmp(last, "k_proj") == 0 || strcmp(last, "v_proj") == 0)) role = HEADS_KV;
    free(n);
    return role;
}

/* Splits dimension `dim` of size `size` made of `groups` attention heads (0: unknown) into
 * tp parts; with fewer kv heads than ranks, each rank takes one whole (replicated) head. */
static int split(const char *name, const char *style, int dim, uint64_t size, uint64_t groups,
                 bool kv, unsigned tp, unsigned rank, tp_slice *out, char *err, size_t errlen)
{
    out->dim = dim;
    if (kv && groups && groups < tp) {
        if (tp % groups != 0 || size % groups != 0)
            return fail(err, errlen, "tensor '%s': %llu kv heads cannot be replicated over tp %u "
                        "(tp must be a multiple of the kv heads)", name,
                        (unsigned long long)groups, tp);
        uint64_t head = rank / (tp / groups), head_size = size / groups;
        out->start = head * head_size;
        out->count = head_size;
        return 0;
    }
    if (groups && groups % tp != 0)
        return fail(err, errlen, "tensor '%s': %llu %sheads are not divisible by tp %u (%s split "
                    "must respect head boundaries)", name, (unsigned long long)groups,
                    kv ? "kv " : "", tp, style);
    if (size % tp != 0)
        return fail(err, errlen, "tensor '%s': dim %d of size %llu is not divisible by tp %u (%s)",
                    name, dim, (unsigned long long)size, tp, style);
    if (groups && size % groups != 0)
        return fail(err, errlen, "tensor '%s': dim %d of size %llu is not a whole number of its "
                    "%llu heads", name, dim, (unsigned long long)size, (unsigned long long)groups);
    out->count = size / tp;
    out->start = rank * out->count;
    return 0;
}

int tp_plan_slice(const tp_plan *plan, const char *name, size_t ndim, const uint64_t *shape,
                  unsigned tp, unsigned rank, tp_slice *out, char *err, size_t errlen)
{
    *out = (tp_slice){-1, 0, 0};
    tp_style style = tp_plan_style(plan, name);
    bool is_bias;
    free(normalize(name, &is_bias));
    if (tp == 1 || style == TP_REPLICATE || (style == TP_ROWWISE && is_bias)) return 0;
    head_role role = style == TP_VOCAB ? HEADS_NONE : role_of(name);
    uint64_t groups = role == HEADS_QUERY ? plan->heads : role == HEADS_KV ? plan->kv_heads : 0;
    if (style == TP_ROWWISE) {
        if (ndim < 2)
            return fail(err, errlen, "tensor '%s': rowwise needs at least 2 dimensions, it has "
                        "%zu", name, ndim);
        return split(name, "rowwise", 1, shape[1], groups, false, tp, rank, out, err, errlen);
    }
    if (ndim < 1)
        return fail(err, errlen, "tensor '%s': a scalar cannot be split %s", name,
                    tp_style_name(style));
    return split(name, tp_style_name(style), 0, shape[0], groups, role == HEADS_KV, tp, rank,
                 out, err, errlen);
}

void tp_plan_free(tp_plan *plan)
{
    for (size_t i = 0; i < plan->count; i++) free(plan->rules[i].pattern);
    free(plan->rules);
    plan->rules = NULL;
    plan->count = 0;
}
