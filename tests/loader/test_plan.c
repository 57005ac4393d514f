/* Tensor-parallel plans: which rule matches which name, and the slices rank r of N gets,
 * against the rules written out by hand (colwise dim 0, rowwise dim 1, GQA replication). */
#include "check.h"
#include "plan.h"

#include <stdlib.h>
#include <string.h>

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
    CHECK_EQ_INT(tp_plan_style(&plan, "model.embed_tokens.weight"), TP_REPLICATE);
    tp_plan_free(&plan);
    cJSON_Delete(json);
}

int main(void)
{
    test_builtin_styles();
    test_colwise_rowwise_slices();
    test_non_dividing_dimension();
    test_grouped_query_attention();
    test_plan_from_json();
    return check_finish("test_plan");
}
