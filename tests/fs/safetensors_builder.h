/* safetensors_builder.h — safetensors headers written by the tests, for the tensor map and the
 * planner: tensors laid out back to back in a given order, and a small llama-like model whose
 * file is sorted by name (as safetensors writers do) or laid out in module order. */
#ifndef HUBFS_TEST_SAFETENSORS_BUILDER_H
#define HUBFS_TEST_SAFETENSORS_BUILDER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KIB 1024ULL
#define MIB (1024ULL * 1024ULL)

typedef struct st_tensor_spec {
    const char *name;
    uint64_t size;               /* bytes; 0 is an empty tensor */
} st_tensor_spec;

typedef struct st_header_bytes {
    uint8_t *bytes;              /* [0, header_end): the length prefix and the JSON */
    uint64_t header_end;
    uint64_t file_size;
} st_header_bytes;

static inline void st_put_le64(uint8_t *out, uint64_t value)
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(value >> (8 * i));
}

/* Writes the header of a file holding the tensors back to back in the order given. The JSON
 * lists them last first (a reader must not rely on key order) after a __metadata__ entry; spaces
 * pad it so that the data starts at a multiple of align (1: no padding). */
static inline bool st_build_header(const st_tensor_spec *tensors, size_t count, uint64_t align,
                                   st_header_bytes *out)
{
    size_t capacity = 64 + align;
    for (size_t i = 0; i < count; i++)
        capacity += strlen(tensors[i].name) + 96;
    char *json = malloc(capacity);
    uint64_t *begins = calloc(count ? count : 1, sizeof *begins);
    if (!json || !begins) {
        free(json);
        free(begins);
        return false;
    }
    uint64_t data_size = 0;
    for (size_t i = 0; i < count; i++) {
        begins[i] = data_size;
        data_size += tensors[i].size;
    }
    size_t length = (size_t)snprintf(json, capacity, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = count; i-- > 0;)
        length += (size_t)snprintf(json + length, capacity - length,
                                   ",\"%s\":{\"dtype\":\"U8\",\"shape\":[%llu],\"data_offsets\":[%llu,%llu]}",
                                   tensors[i].name, (unsigned long long)tensors[i].size,
                                   (unsigned long long)begins[i],
                                   (unsigned long long)(begins[i] + tensors[i].size));
    json[length++] = '}';
    while ((8 + length) % align)
        json[length++] = ' ';
    out->header_end = 8 + length;
    out->file_size = out->header_end + data_size;
    out->bytes = malloc(out->header_end);
    if (out->bytes) {
        st_put_le64(out->bytes, length);
        memcpy(out->bytes + 8, json, length);
    }
    free(json);
    free(begins);
    return out->bytes != NULL;
}

/* ---- a small llama-like model --------------------------------------------------------------- */

#define MODEL_MAX_TENSORS 128
#define MODEL_ROLES 9

typedef enum model_layout { LAYOUT_BY_NAME, LAYOUT_MODULE_ORDER } model_layout;

/* A layer's tensors in the order its module runs them (and a module-order loader reads them). */
static const struct {
    const char *role;
    uint64_t size;
} model_roles[MODEL_ROLES] = {
    {"input_layernorm", 16 * KIB},      {"self_attn.q_proj", 2 * MIB},   {"self_attn.k_proj", 1536 * KIB},
    {"self_attn.v_proj", 1536 * KIB},   {"self_attn.o_proj", 2 * MIB},   {"post_attention_layernorm", 16 * KIB},
    {"mlp.gate_proj", 3 * MIB},         {"mlp.up_proj", 3 * MIB},        {"mlp.down_proj", 3 * MIB},
};

typedef struct model_spec {
    st_tensor_spec tensors[MODEL_MAX_TENSORS];
    char names[MODEL_MAX_TENSORS][96];
    size_t count;
} model_spec;

static inline int st_spec_by_name(const void *a, const void *b)
{
    return strcmp(((const st_tensor_spec *)a)->name, ((const st_tensor_spec *)b)->name);
}

static inline void model_add(model_spec *m, uint64_t size, const char *name)
{
    snprintf(m->names[m->count], sizeof m->names[0], "%s", name);
    m->tensors[m->count] = (st_tensor_spec){m->names[m->count], size};
    m->count++;
}

/* embed_tokens, layers × the roles above, norm, lm_head. */
static inline void model_spec_init(model_spec *m, int layers, model_layout layout)
{
    m->count = 0;
    model_add(m, 4 * MIB, "model.embed_tokens.weight");
    char name[96];
    for (int layer = 0; layer < layers && m->count + MODEL_ROLES + 2 <= MODEL_MAX_TENSORS; layer++)
        for (int r = 0; r < MODEL_ROLES; r++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", layer, model_roles[r].role);
            model_add(m, model_roles[r].size, name);
        }
    model_add(m, 16 * KIB, "model.norm.weight");
    model_add(m, 4 * MIB, "lm_head.weight");
    if (layout == LAYOUT_BY_NAME)
        qsort(m->tensors, m->count, sizeof m->tensors[0], st_spec_by_name);
}

#endif
