/* Tensor-parallel plans: which rule matches which name, and the slices rank r of N gets,
 * against the rules written out by hand (colwise dim 0, rowwise dim 1, GQA replication). */
#include "check.h"
#include "pattern_reference.h"
#include "plan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char err[1024];

static tp_slice slice_of(const tp_plan *plan, const char *name, size_t ndim, const uint64_t *shape,
                         unsigned tp, unsigned rank, int *rc)
{
    tp_slice s;
    err[0] = '\0';
    *rc = tp_plan_slice(plan, name, ndim, shape, tp, rank, &s, err, sizeof err);
    return s;
}

static void test_builtin_styles(void)
{
    tp_plan plan;
    CHECK_EQ_INT(tp_plan_builtin(&plan, err, sizeof err), 0);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.0.self_attn.q_proj.weight"), TP_COLWISE);
    CHECK_EQ_INT(tp_plan_style(&plan, "layers.17.self_attn.k_proj.bias"), TP_COLWISE);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.3.self_attn.o_proj.weight"), TP_ROWWISE);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.3.mlp.gate_proj.weight"), TP_COLWISE);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.3.mlp.up_proj.weight"), TP_COLWISE);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.3.mlp.down_proj.weight"), TP_ROWWISE);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.embed_tokens.weight"), TP_VOCAB);
    CHECK_EQ_INT(tp_plan_style(&plan, "lm_head.weight"), TP_VOCAB);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.3.input_layernorm.weight"), TP_REPLICATE);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.norm.weight"), TP_REPLICATE);
    /* `*` is one component: it does not swallow dots or match nothing. */
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.self_attn.q_proj.weight"), TP_REPLICATE);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.1.2.self_attn.q_proj.weight"), TP_REPLICATE);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.1.self_attn.q_proj.weight_scale"), TP_REPLICATE);
    tp_plan_free(&plan);
}

static void test_colwise_rowwise_slices(void)
{
    tp_plan plan;
    tp_plan_builtin(&plan, err, sizeof err);
    uint64_t gate[2] = {64, 32};
    int rc;
    tp_slice s = slice_of(&plan, "model.layers.0.mlp.gate_proj.weight", 2, gate, 4, 3, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(s.dim, 0);
    CHECK_EQ_INT(s.start, 48);
    CHECK_EQ_INT(s.count, 16);
    uint64_t down[2] = {32, 64};
    s = slice_of(&plan, "model.layers.0.mlp.down_proj.weight", 2, down, 8, 5, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(s.dim, 1);
    CHECK_EQ_INT(s.start, 40);
    CHECK_EQ_INT(s.count, 8);
    uint64_t bias[1] = {32};
    s = slice_of(&plan, "model.layers.0.mlp.down_proj.bias", 1, bias, 8, 5, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(s.dim, -1); /* rowwise bias: replicated */
    s = slice_of(&plan, "model.layers.0.mlp.up_proj.bias", 1, bias, 8, 5, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(s.dim, 0); /* colwise bias: split */
    CHECK_EQ_INT(s.start, 20);
    CHECK_EQ_INT(s.count, 4);
    s = slice_of(&plan, "model.norm.weight", 1, bias, 8, 5, &rc);
    CHECK_EQ_INT(s.dim, -1);
    s = slice_of(&plan, "model.layers.0.mlp.gate_proj.weight", 2, gate, 1, 0, &rc);
    CHECK_EQ_INT(s.dim, -1); /* tp 1: everything whole */
    tp_plan_free(&plan);
}

static void test_non_dividing_dimension(void)
{
    tp_plan plan;
    tp_plan_builtin(&plan, err, sizeof err);
    uint64_t shape[2] = {100, 32};
    int rc;
    slice_of(&plan, "model.embed_tokens.weight", 2, shape, 8, 0, &rc);
    CHECK_EQ_INT(rc, -1);
    CHECK_STR_CONTAINS(err, "tensor 'model.embed_tokens.weight': dim 0 of size 100 is not divisible by tp 8");
    uint64_t down[2] = {32, 36};
    slice_of(&plan, "model.layers.2.mlp.down_proj.weight", 2, down, 8, 0, &rc);
    CHECK_EQ_INT(rc, -1);
    CHECK_STR_CONTAINS(err, "dim 1 of size 36");
    uint64_t one[1] = {32};
    slice_of(&plan, "model.layers.2.mlp.down_proj.weight", 1, one, 2, 0, &rc);
    CHECK_EQ_INT(rc, -1);
    CHECK_STR_CONTAINS(err, "rowwise needs at least 2 dimensions");
    tp_plan_free(&plan);
}

/* 8 query heads and 2 kv heads of head_dim 4: hidden 32, kv dim 8. */
static void test_grouped_query_attention(void)
{
    tp_plan plan;
    tp_plan_builtin(&plan, err, sizeof err);
    plan.heads = 8;
    plan.kv_heads = 2;
    uint64_t k[2] = {8, 32}, q[2] = {32, 32};
    int rc;
    /* tp 2: one kv head each, a plain split. */
    tp_slice s = slice_of(&plan, "model.layers.0.self_attn.k_proj.weight", 2, k, 2, 1, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(s.start, 4);
    CHECK_EQ_INT(s.count, 4);
    /* tp 8: kv head r / (8 / 2): ranks 0-3 take head 0, ranks 4-7 head 1. */
    for (unsigned r = 0; r < 8; r++) {
        s = slice_of(&plan, "model.layers.0.self_attn.v_proj.weight", 2, k, 8, r, &rc);
        CHECK_EQ_INT(rc, 0);
        CHECK_EQ_INT(s.dim, 0);
        CHECK_EQ_INT(s.start, r < 4 ? 0 : 4);
        CHECK_EQ_INT(s.count, 4);
    }
    s = slice_of(&plan, "model.layers.0.self_attn.q_proj.weight", 2, q, 8, 7, &rc);
    CHECK_EQ_INT(s.start, 28);
    CHECK_EQ_INT(s.count, 4);
    /* 6 ranks: 8 query heads do not divide; 3 ranks do not replicate 2 kv heads. */
    slice_of(&plan, "model.layers.0.self_attn.q_proj.weight", 2, q, 16, 0, &rc);
    CHECK_EQ_INT(rc, -1);
    CHECK_STR_CONTAINS(err, "8 heads are not divisible by tp 16");
    slice_of(&plan, "model.layers.0.self_attn.k_proj.weight", 2, k, 3, 0, &rc);
    CHECK_EQ_INT(rc, -1);
    CHECK_STR_CONTAINS(err, "kv heads cannot be replicated over tp 3");
    slice_of(&plan, "model.layers.0.self_attn.o_proj.weight", 2, q, 16, 0, &rc);
    CHECK_EQ_INT(rc, -1);
    CHECK_STR_CONTAINS(err, "head boundaries");
    tp_plan_free(&plan);
}

static void test_plan_from_json(void)
{
    tp_plan plan;
    cJSON *json = cJSON_Parse("{\"model.layers.*.mlp.up_proj.weight\":\"local_rowwise\","
                              "\"lm_head\":\"colwise_rep\",\"norm\":\"replicate\"}");
    CHECK_EQ_INT(tp_plan_from_json(json, &plan, err, sizeof err), 0);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.4.mlp.up_proj.weight"), TP_ROWWISE);
    CHECK_EQ_INT(tp_plan_style(&plan, "lm_head.weight"), TP_COLWISE);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.4.mlp.gate_proj.weight"), TP_REPLICATE);
    tp_plan_free(&plan);
    cJSON_Delete(json);

    json = cJSON_Parse("{\"layers.*.mlp.gate_up_proj\":\"packed_colwise\"}");
    CHECK_EQ_INT(tp_plan_from_json(json, &plan, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "'packed_colwise' is not supported");
    CHECK_STR_CONTAINS(err, "layers.*.mlp.gate_up_proj");
    cJSON_Delete(json);
    json = cJSON_Parse("[1]");
    CHECK_EQ_INT(tp_plan_from_json(json, &plan, err, sizeof err), -1);
    cJSON_Delete(json);

    /* config.json's plan wins over the built-in one; head counts come along. */
    json = cJSON_Parse("{\"num_attention_heads\":8,\"num_key_value_heads\":2,"
                       "\"base_model_tp_plan\":{\"layers.*.self_attn.q_proj\":\"rowwise\"}}");
    CHECK_EQ_INT(tp_plan_resolve(json, NULL, &plan, err, sizeof err), 0);
    CHECK(strcmp(plan.source, "config.json") == 0);
    CHECK_EQ_INT(plan.heads, 8);
    CHECK_EQ_INT(plan.kv_heads, 2);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.0.self_attn.q_proj.weight"), TP_ROWWISE);
    tp_plan_free(&plan);
    cJSON_Delete(json);
}

/* Every pattern over {a, b, ., *} of up to 5 characters against every name over {a, b, .}
 * of up to 6, compared with the dynamic-programming reference. */
static void test_pattern_match_agrees_with_the_reference(void)
{
    char pattern[8], name[8];
    int disagreements = 0;
    for (size_t plen = 0; plen <= 5; plen++)
        for (size_t pcode = 0; pcode < (size_t)1 << (2 * plen); pcode++) {
            for (size_t k = 0; k < plen; k++) pattern[k] = "ab.*"[(pcode >> (2 * k)) & 3];
            pattern[plen] = '\0';
            for (size_t nlen = 0; nlen <= 6; nlen++) {
                size_t codes = 1;
                for (size_t k = 0; k < nlen; k++) codes *= 3;
                for (size_t ncode = 0; ncode < codes; ncode++) {
                    size_t c = ncode;
                    for (size_t k = 0; k < nlen; k++, c /= 3) name[k] = "ab."[c % 3];
                    name[nlen] = '\0';
                    if (tp_pattern_match(pattern, name) != reference_pattern_match(pattern, name) &&
                        disagreements++ < 5)
                        fprintf(stderr, "pattern '%s' name '%s': %d, reference %d\n", pattern, name,
                                tp_pattern_match(pattern, name), reference_pattern_match(pattern, name));
                }
            }
        }
    CHECK_EQ_INT(disagreements, 0);
}

static char *repeated(const char *unit, size_t times, const char *end)
{
    size_t n = strlen(unit);
    char *s = malloc(n * times + strlen(end) + 1);
    if (!s) abort();
    for (size_t i = 0; i < times; i++) memcpy(s + i * n, unit, n);
    strcpy(s + n * times, end);
    return s;
}

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The style one config plan entry `pattern: colwise` gives `name`. */
static tp_style style_under(const char *pattern, const char *name)
{
    cJSON *json = cJSON_CreateObject();
    cJSON_AddStringToObject(json, pattern, "colwise");
    tp_plan plan;
    CHECK_EQ_INT(tp_plan_from_json(json, &plan, err, sizeof err), 0);
    tp_style style = tp_plan_style(&plan, name);
    tp_plan_free(&plan);
    cJSON_Delete(json);
    return style;
}

/* Backtracking took ~130 s for 14 stars against 40 characters and grew by ~C(n, k): the
 * plan is repo content, so matching must be linear. The alarm turns a hang into a failure. */
static void test_many_stars_match_in_linear_time(void)
{
    alarm(60);
    char *forty = repeated("a", 40, ""), *long_name = repeated("a", 4000, "");
    char *stars16 = repeated("*", 16, "b"), *stars16_match = repeated("*", 16, "a");
    char *alternating = repeated("a*", 255, "b"), *alternating_match = repeated("a*", 255, "a");
    char *dotted = repeated("*.", 200, "x"), *dotted_name = repeated("7.", 200, "x");
    double start = seconds_now();
    CHECK_EQ_INT(style_under(stars16, forty), TP_REPLICATE);
    CHECK_EQ_INT(style_under(stars16_match, forty), TP_COLWISE);
    CHECK_EQ_INT(style_under(alternating, long_name), TP_REPLICATE);
    CHECK_EQ_INT(style_under(alternating_match, long_name), TP_COLWISE);
    CHECK_EQ_INT(style_under(dotted, dotted_name), TP_COLWISE);
    dotted_name[0] = '.'; /* an empty first component: `*` needs a character */
    CHECK_EQ_INT(style_under(dotted, dotted_name), TP_REPLICATE);
    double elapsed = seconds_now() - start;
    CHECK(elapsed < 1.0);
    printf("many stars: %.6f s\n", elapsed);
    alarm(0);
    free(forty), free(long_name), free(stars16), free(stars16_match);
    free(alternating), free(alternating_match), free(dotted), free(dotted_name);
}

/* 400,000 stars: the matcher neither recurses nor slows down, and a plan refuses the
 * pattern by its length (naming the limit) instead of carrying it. */
static void test_huge_patterns(void)
{
    alarm(60);
    char *stars = repeated("*", 400000, ""), *name = repeated("a", 400000, "");
    CHECK(tp_pattern_match(stars, name));
    CHECK(!tp_pattern_match(stars, name + 1));
    name[200000] = '.';
    CHECK(!tp_pattern_match(stars, name));
    cJSON *json = cJSON_CreateObject();
    cJSON_AddStringToObject(json, stars, "colwise");
    tp_plan plan;
    CHECK_EQ_INT(tp_plan_from_json(json, &plan, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "is a pattern of 400000 bytes, longer than the 512 allowed");
    cJSON_Delete(json);
    alarm(0);
    free(stars);
    free(name);
}

static void test_plan_entry_limit(void)
{
    cJSON *json = cJSON_CreateObject();
    char pattern[32];
    for (int i = 0; i < TP_PLAN_MAX_ENTRIES; i++) {
        snprintf(pattern, sizeof pattern, "layers.%d.mlp.up_proj", i);
        cJSON_AddStringToObject(json, pattern, "colwise");
    }
    tp_plan plan;
    CHECK_EQ_INT(tp_plan_from_json(json, &plan, err, sizeof err), 0);
    CHECK_EQ_INT(plan.count, TP_PLAN_MAX_ENTRIES);
    tp_plan_free(&plan);
    cJSON_AddStringToObject(json, "one.too.many", "colwise");
    CHECK_EQ_INT(tp_plan_from_json(json, &plan, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "the plan has 1025 entries, more than the 1024 allowed");
    cJSON_Delete(json);
}

/* HF configs carry base_model_tp_plan without the embedding and LM head: they are split by
 * vocabulary anyway (the tables are the largest tensors), unless an entry names them. */
static void test_embedding_and_lm_head_default_to_vocab(void)
{
    cJSON *config = cJSON_Parse("{\"base_model_tp_plan\":{\"layers.*.self_attn.q_proj\":\"colwise\","
                                "\"layers.*.mlp.down_proj\":\"rowwise\"}}");
    tp_plan plan;
    CHECK_EQ_INT(tp_plan_resolve(config, NULL, &plan, err, sizeof err), 0);
    const char *vocab[] = {"model.embed_tokens.weight", "lm_head.weight", "transformer.wte.weight",
                           "transformer.word_embeddings.weight", "tok_embeddings.weight",
                           "model.decoder.embed_tokens.weight", "gpt_neox.embed_in.weight",
                           "embed_out.weight", "model.language_model.embed_tokens.weight"};
    for (size_t i = 0; i < sizeof vocab / sizeof vocab[0]; i++)
        CHECK_EQ_INT(tp_plan_style(&plan, vocab[i]), TP_VOCAB);
    const char *whole[] = {"transformer.wpe.weight", "transformer.word_embeddings_layernorm.weight",
                           "model.norm.weight", "lm_head_norm.weight", "model.layers.0.lm_head.x"};
    for (size_t i = 0; i < sizeof whole / sizeof whole[0]; i++)
        CHECK_EQ_INT(tp_plan_style(&plan, whole[i]), TP_REPLICATE);
    uint64_t shape[2] = {16384, 1024};
    int rc;
    tp_slice s = slice_of(&plan, "model.embed_tokens.weight", 2, shape, 8, 3, &rc);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(s.dim, 0);
    CHECK_EQ_INT(s.start, 3 * 2048);
    CHECK_EQ_INT(s.count, 2048);
    uint64_t odd[2] = {50257, 768};
    slice_of(&plan, "transformer.wte.weight", 2, odd, 2, 0, &rc);
    CHECK_EQ_INT(rc, -1);
    CHECK_STR_CONTAINS(err, "dim 0 of size 50257 is not divisible by tp 2 (vocab); a --plan FILE "
                       "with {\"transformer.wte.weight\": \"replicate\"} keeps it whole");
    tp_plan_free(&plan);
    cJSON_Delete(config);

    /* An entry that matches them decides. */
    config = cJSON_Parse("{\"base_model_tp_plan\":{\"embed_tokens\":\"replicate\","
                         "\"lm_head\":\"colwise_rep\"}}");
    CHECK_EQ_INT(tp_plan_resolve(config, NULL, &plan, err, sizeof err), 0);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.embed_tokens.weight"), TP_REPLICATE);
    CHECK_EQ_INT(tp_plan_style(&plan, "lm_head.weight"), TP_COLWISE);
    tp_plan_free(&plan);
    cJSON_Delete(config);
}

static char *write_temp_file(const char *text)
{
    static char path[64];
    snprintf(path, sizeof path, "/tmp/test_plan.XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || close(fd) != 0) abort();
    return path;
}

/* A plan file is merged over the model's plan: same-pattern entries (after normalizing
 * "model." and ".weight") are replaced, new ones added, and the file's come first. */
static void test_plan_file_merges_over_the_model_plan(void)
{
    cJSON *config = cJSON_Parse("{\"base_model_tp_plan\":{\"layers.*.mlp.up_proj\":\"colwise\","
                                "\"layers.*.mlp.down_proj\":\"rowwise\","
                                "\"layers.*.self_attn.q_proj\":\"colwise\"}}");
    char *path = write_temp_file("{\"model.layers.*.mlp.up_proj.weight\": \"rowwise\","
                                 " \"layers.1.self_attn.q_proj\": \"replicate\","
                                 " \"norm\": \"colwise\"}");
    tp_plan plan;
    CHECK_EQ_INT(tp_plan_resolve(config, path, &plan, err, sizeof err), 0);
    CHECK(strcmp(plan.source, "plan file over config.json") == 0);
    CHECK_EQ_INT(plan.count, 5);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.0.mlp.up_proj.weight"), TP_ROWWISE);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.0.mlp.down_proj.weight"), TP_ROWWISE);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.0.self_attn.q_proj.weight"), TP_COLWISE);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.1.self_attn.q_proj.weight"), TP_REPLICATE);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.norm.weight"), TP_COLWISE);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.embed_tokens.weight"), TP_VOCAB);
    tp_plan_free(&plan);

    /* Without a config plan the file is merged over the built-in rules. */
    CHECK_EQ_INT(tp_plan_resolve(NULL, path, &plan, err, sizeof err), 0);
    CHECK(strcmp(plan.source, "plan file over built-in Llama rules") == 0);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.0.mlp.up_proj.weight"), TP_ROWWISE);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.0.mlp.gate_proj.weight"), TP_COLWISE);
    CHECK_EQ_INT(tp_plan_style(&plan, "model.layers.0.self_attn.o_proj.weight"), TP_ROWWISE);
    tp_plan_free(&plan);
    unlink(path);

    path = write_temp_file("{\"layers.*.mlp.up_proj\": \"packed_colwise\"}");
    CHECK_EQ_INT(tp_plan_resolve(config, path, &plan, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, path);
    CHECK_STR_CONTAINS(err, "'packed_colwise' is not supported");
    unlink(path);
    cJSON_Delete(config);
}

int main(void)
{
    test_builtin_styles();
    test_colwise_rowwise_slices();
    test_non_dividing_dimension();
    test_grouped_query_attention();
    test_plan_from_json();
    test_pattern_match_agrees_with_the_reference();
    test_many_stars_match_in_linear_time();
    test_huge_patterns();
    test_plan_entry_limit();
    test_embedding_and_lm_head_default_to_vocab();
    test_plan_file_merges_over_the_model_plan();
    return check_finish("test_plan");
}
