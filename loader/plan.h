/* plan.h — tensor-parallel plans: which tensor is split along which dimension (private). */
#ifndef HUBFS_LOADER_PLAN_H
#define HUBFS_LOADER_PLAN_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum tp_style {
    TP_REPLICATE, /* every rank gets the whole tensor */
    TP_COLWISE,   /* split output features: weight and bias dim 0 */
    TP_ROWWISE,   /* split input features: weight dim 1, bias replicated */
    TP_VOCAB,     /* vocabulary-parallel embedding / LM head: dim 0 */
} tp_style;

typedef struct tp_rule {
    char *pattern; /* normalized: no "model." prefix, no ".weight"/".bias" suffix */
    tp_style style;
} tp_rule;

/* Plans are repo content (config.json), so hostile: a plan or plan file may hold at most
 * this many entries, each pattern at most this many bytes. Real plans have a few dozen
 * entries of under 60 bytes. */
#define TP_PLAN_MAX_ENTRIES 1024
#define TP_PLAN_MAX_PATTERN_BYTES 512

typedef struct tp_plan {
    tp_rule *rules; /* the first rule that matches a name decides */
    size_t count;
    uint64_t heads, kv_heads; /* 0 when the config does not say */
    const char *source;       /* "config.json", "built-in Llama rules", "plan file over ..." */
} tp_plan;

/* A rank's piece of a tensor: elements [start, start + count) of dimension `dim`, or the
 * whole tensor when dim is -1. */
typedef struct tp_slice {
    int dim;
    uint64_t start, count;
} tp_slice;

/* Maps a style name ("colwise", "local_rowwise", ...) to a style; unsupported ones fail. */
int tp_style_parse(const char *name, tp_style *out, char *err, size_t errlen);
const char *tp_style_name(tp_style style);

/* The built-in Llama-family rules. */
int tp_plan_builtin(tp_plan *plan, char *err, size_t errlen);
/* Rules from a {"pattern": "style"} object; refuses more than TP_PLAN_MAX_ENTRIES entries
 * and patterns longer than TP_PLAN_MAX_PATTERN_BYTES. */
int tp_plan_from_json(const cJSON *object, tp_plan *plan, char *err, size_t errlen);
/* The model's plan is config's base_model_tp_plan, else the built-in rules; a plan file
 * (plan_path, may be NULL) is merged over it: its entries replace those with the same
 * pattern, add the others, and come first. Head counts come from config (may be NULL). */
int tp_plan_resolve(const cJSON *config, const char *plan_path, tp_plan *plan, char *err,
                    size_t errlen);
/* The style of the first rule matching `name`. When none does: TP_VOCAB for an embedding
 * or LM head (last name component embed_tokens, wte, word_embeddings, tok_embeddings,
 * embed_in, lm_head or embed_out), TP_REPLICATE for everything else. */
tp_style tp_plan_style(const tp_plan *plan, const char *name);
/* Whether a normalized pattern matches a normalized name: `*` is one or more characters
 * other than '.', everything else matches itself. Linear time, constant stack, whatever the
 * lengths (exposed for the unit test and the fuzzer). */
bool tp_pattern_match(const char *pattern, const char *name);
/* Rank `rank` of `tp`'s slice of a tensor; fails (naming the tensor and why) when a split
 * does not divide evenly or would cut through an attention head. */
int tp_plan_slice(const tp_plan *plan, const char *name, size_t ndim, const uint64_t *shape,
                  unsigned tp, unsigned rank, tp_slice *out, char *err, size_t errlen);
void tp_plan_free(tp_plan *plan);

#endif
