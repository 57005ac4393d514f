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
    {"layers.*.mlp.down_proj", TP_ROWWISE},
};

/* The last name components of embeddings and LM heads across HF architectures (Llama and
 * most: embed_tokens/lm_head; GPT-2: wte; BLOOM, Falcon: word_embeddings; Meta's Llama
 * format: tok_embeddings; GPT-NeoX: embed_in/embed_out). Unless a plan entry matches them
 * they are split by vocabulary: replicating a [vocab, hidden] table on every rank is the
 * largest waste a plan can leave, and HF's plans usually omit them. */
static const char *const vocab_defaults[] = {
    "embed_tokens", "wte", "word_embeddings", "tok_embeddings", "embed_in", "lm_head", "embed_out",
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

/* Whether `n` (nlen bytes) begins with `p` (plen bytes). */
static bool has_prefix(const char *n, size_t nlen, const char *p, size_t plen)
{
    return plen <= nlen && memcmp(n, p, plen) == 0;
}

/* The length of the literal run at the start of `p` (up to a '*' or the end). */
static size_t literal_run(const char *p, size_t plen)
{
    const char *star = memchr(p, '*', plen);
    return star ? (size_t)(star - p) : plen;
}

/* One dotted component of a pattern against one of a name. The pattern is literal runs
 * separated by runs of k stars, each run "at least k characters". Placing every middle
 * literal at its leftmost possible position never loses a match (a star run can always
 * absorb more), so one forward pass decides: linear time, no backtracking. */
static bool component_match(const char *p, size_t plen, const char *n, size_t nlen)
{
    size_t head = literal_run(p, plen);
    if (head == plen) return plen == nlen && memcmp(p, n, nlen) == 0;
    size_t tail = 0;
    while (tail < plen && p[plen - 1 - tail] != '*') tail++;
    if (!has_prefix(n, nlen, p, head) || nlen - head < tail ||
        memcmp(n + nlen - tail, p + plen - tail, tail) != 0)
        return false;
    size_t pos = head, end = nlen - tail; /* stars and middle literals must fit in [pos, end) */
    for (size_t i = head; i < plen - tail;) {
        size_t stars = 0;
        while (i + stars < plen && p[i + stars] == '*') stars++;
        i += stars;
        if (end - pos < stars) return false;
        pos += stars;
        size_t literal = literal_run(p + i, plen - tail - i);
        if (literal == 0) break; /* the stars before the tail */
        const char *found = memmem(n + pos, end - pos, p + i, literal);
        if (!found) return false;
        pos = (size_t)(found - n) + literal;
        i += literal;
    }
    return true;
}

/* Neither a star nor a literal other than '.' matches a '.', so the dots of pattern and
 * name pair up one to one and each component pair is matched on its own. */
bool tp_pattern_match(const char *pattern, const char *name)
{
    for (;;) {
        const char *p_dot = strchr(pattern, '.'), *n_dot = strchr(name, '.');
        size_t plen = p_dot ? (size_t)(p_dot - pattern) : strlen(pattern);
        size_t nlen = n_dot ? (size_t)(n_dot - name) : strlen(name);
        if (!component_match(pattern, plen, name, nlen)) return false;
        if (!p_dot || !n_dot) return !p_dot && !n_dot;
        pattern = p_dot + 1;
        name = n_dot + 1;
    }
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
    size_t entries = (size_t)cJSON_GetArraySize(object);
    if (entries > TP_PLAN_MAX_ENTRIES)
        return fail(err, errlen, "the plan has %zu entries, more than the %d allowed (a real "
                    "plan has a few dozen)", entries, TP_PLAN_MAX_ENTRIES);
    for (const cJSON *e = object->child; e; e = e->next) {
        tp_style style = TP_REPLICATE;
        char why[300];
        size_t length = strlen(e->string);
        if (length > TP_PLAN_MAX_PATTERN_BYTES)
            return tp_plan_free(plan), fail(err, errlen, "plan entry '%.40s...' is a pattern of "
                                            "%zu bytes, longer than the %d allowed", e->string,
                                            length, TP_PLAN_MAX_PATTERN_BYTES);
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

static int read_plan_file(const char *path, tp_plan *plan, char *err, size_t errlen)
{
    char why[512];
    char *text = read_small_file(path, 16u << 20, err, errlen);
    if (!text) return -1;
    cJSON *json = cJSON_Parse(text);
    free(text);
    int rc = json ? tp_plan_from_json(json, plan, why, sizeof why)
                  : fail(why, sizeof why, "not valid JSON");
    cJSON_Delete(json);
    return rc != 0 ? fail(err, errlen, "%s: %s", path, why) : 0;
}

static bool has_pattern(const tp_rule *rules, size_t count, const char *pattern)
{
    for (size_t i = 0; i < count; i++)
        if (strcmp(rules[i].pattern, pattern) == 0) return true;
    return false;
}

/* Appends to `over` the rules of `base` whose pattern `over` lacks, taking them over;
 * frees what is left of `base`. Rules of `over` come first, so an entry of the plan file
 * also wins over a model entry of another pattern matching the same tensor. */
static int merge_under(tp_plan *over, tp_plan *base, char *err, size_t errlen)
{
    tp_rule *grown = realloc(over->rules, (over->count + base->count + 1) * sizeof *grown);
    if (!grown) return tp_plan_free(base), fail(err, errlen, "out of memory");
    over->rules = grown;
    size_t own = over->count;
    for (size_t i = 0; i < base->count; i++) {
        tp_rule *rule = &base->rules[i];
        if (has_pattern(over->rules, own, rule->pattern)) continue;
        over->rules[over->count++] = *rule;
        rule->pattern = NULL; /* now owned by `over` */
    }
    tp_plan_free(base);
    return 0;
}

/* The model's own plan: config.json's base_model_tp_plan, else the built-in rules. */
static int model_plan(const cJSON *config, tp_plan *plan, char *err, size_t errlen)
{
    const cJSON *config_plan = cJSON_GetObjectItemCaseSensitive(config, "base_model_tp_plan");
    char why[512];
    if (!config_plan || cJSON_IsNull(config_plan)) return tp_plan_builtin(plan, err, errlen);
    if (tp_plan_from_json(config_plan, plan, why, sizeof why) != 0)
        return fail(err, errlen, "config.json base_model_tp_plan: %s", why);
    plan->source = "config.json";
    return 0;
}

int tp_plan_resolve(const cJSON *config, const char *plan_path, tp_plan *plan, char *err,
                    size_t errlen)
{
    tp_plan base;
    if (model_plan(config, &base, err, errlen) != 0) return -1;
    if (!plan_path) {
        *plan = base;
    } else {
        if (read_plan_file(plan_path, plan, err, errlen) != 0) return tp_plan_free(&base), -1;
        plan->source = strcmp(base.source, "config.json") == 0
                           ? "plan file over config.json" : "plan file over built-in Llama rules";
        if (merge_under(plan, &base, err, errlen) != 0) return tp_plan_free(plan), -1;
    }
    plan->heads = config_uint(config, "num_attention_heads");
    plan->kv_heads = config_uint(config, "num_key_value_heads");
    if (!plan->kv_heads) plan->kv_heads = plan->heads;
    return 0;
}

static const char *last_component(const char *normalized)
{
    const char *dot = strrchr(normalized, '.');
    return dot ? dot + 1 : normalized;
}

static tp_style default_style(const char *normalized)
{
    const char *last = last_component(normalized);
    for (size_t i = 0; i < sizeof vocab_defaults / sizeof vocab_defaults[0]; i++)
        if (strcmp(last, vocab_defaults[i]) == 0) return TP_VOCAB;
    return TP_REPLICATE;
}

tp_style tp_plan_style(const tp_plan *plan, const char *name)
{
    char *normalized = normalize(name, NULL);
    if (!normalized) return TP_REPLICATE;
    tp_style style = default_style(normalized);
    for (size_t i = 0; i < plan->count; i++)
        if (tp_pattern_match(plan->rules[i].pattern, normalized)) {
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
    const char *last = n ? last_component(n) : NULL;
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
    if (size % tp != 0) {
        bool vocab = strcmp(style, "vocab") == 0; /* often a default: say how to opt out */
        return fail(err, errlen, "tensor '%s': dim %d of size %llu is not divisible by tp %u "
                    "(%s)%s%s%s", name, dim, (unsigned long long)size, tp, style,
                    vocab ? "; a --plan FILE with {\"" : "", vocab ? name : "",
                    vocab ? "\": \"replicate\"} keeps it whole on every rank" : "");
    }
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
