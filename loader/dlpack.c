/* A rank's tensors as DLPack tensors: each a view of the arena that holds a reference to the
 * rank, dropped by its deleter (from whichever thread the consumer frees it on). */
#include "loader_dlpack.h"
#include "rank.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

typedef struct dlpack_view {
    DLManagedTensor managed;
    loader_rank *rank;
    int64_t shape[]; /* the DLPack shape: ndim entries (one for a bytes view) */
} dlpack_view;

typedef struct dtype_code {
    const char *name;
    uint8_t code;
} dtype_code;

/* safetensors dtypes of whole bytes and their DLPack codes (F8_E4M3 is e4m3fn, as in torch). */
static const dtype_code dtype_codes[] = {
    {"BOOL", kDLBool},   {"U8", kDLUInt},          {"I8", kDLInt},
    {"U16", kDLUInt},    {"I16", kDLInt},          {"F16", kDLFloat},
    {"BF16", kDLBfloat}, {"U32", kDLUInt},         {"I32", kDLInt},
    {"F32", kDLFloat},   {"U64", kDLUInt},         {"I64", kDLInt},
    {"F64", kDLFloat},   {"C64", kDLComplex},      {"F8_E4M3", kDLFloat8_e4m3fn},
    {"F8_E5M2", kDLFloat8_e5m2}, {"F8_E4M3FNUZ", kDLFloat8_e4m3fnuz},
    {"F8_E5M2FNUZ", kDLFloat8_e5m2fnuz}, {"F8_E8M0", kDLFloat8_e8m0fnu},
};

static int dlpack_dtype(const rank_tensor *t, DLDataType *out, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof dtype_codes / sizeof dtype_codes[0]; i++)
        if (strcmp(dtype_codes[i].name, t->dtype->name) == 0) {
            *out = (DLDataType){dtype_codes[i].code, (uint8_t)t->dtype->bits, 1};
            return 0;
        }
    return fail(err, errlen, "tensor '%s' is %s, which has no DLPack type: export its bytes "
                "instead (LOADER_DLPACK_BYTES)", t->name, t->dtype->name);
}

/* kDLCPU 0 for host memory, kDLCUDA K for "cuda:K". */
static DLDevice dlpack_device(const loader_rank *rank)
{
    const char *name = loader_rank_device(rank);
    if (strncmp(name, "cuda:", 5) == 0) return (DLDevice){kDLCUDA, (int32_t)atoi(name + 5)};
    return (DLDevice){kDLCPU, 0};
}

static void delete_view(DLManagedTensor *managed)
{
    dlpack_view *view = managed->manager_ctx;
    loader_rank_free(view->rank);
    free(view);
}

static dlpack_view *new_view(const rank_tensor *t, bool bytes, char *err, size_t errlen)
{
    size_t dims = bytes ? 1 : t->ndim;
    dlpack_view *view = calloc(1, sizeof *view + (dims ? dims : 1) * sizeof view->shape[0]);
    if (!view) return fail(err, errlen, "out of memory"), NULL;
    for (size_t d = 0; d < dims; d++) {
        uint64_t extent = bytes ? t->nbytes : t->shape[d];
        if (extent > INT64_MAX) {
            free(view);
            return fail(err, errlen, "tensor '%s': a dimension exceeds what DLPack holds", t->name), NULL;
        }
        view->shape[d] = (int64_t)extent;
    }
    view->managed.dl_tensor.ndim = (int32_t)dims;
    return view;
}

DLManagedTensor *loader_rank_dlpack(loader_rank *rank, size_t index, unsigned flags, char *err,
                                    size_t errlen)
{
    if (index >= rank->count)
        return fail(err, errlen, "no tensor %zu: the rank has %zu", index, rank->count), NULL;
    const rank_tensor *t = &rank->tensors[index];
    bool bytes = flags & LOADER_DLPACK_BYTES;
    DLDataType dtype = {kDLUInt, 8, 1};
    if (!bytes && dlpack_dtype(t, &dtype, err, errlen) != 0) return NULL;
    dlpack_view *view = new_view(t, bytes, err, errlen);
    if (!view) return NULL;
    DLTensor *dl = &view->managed.dl_tensor;
    dl->data = (uint8_t *)rank->arena + t->arena_offset;
    dl->device = dlpack_device(rank);
    dl->dtype = dtype;
    dl->shape = view->shape;
    view->managed.manager_ctx = view;
    view->managed.deleter = delete_view;
    view->rank = loader_rank_retain(rank);
    return &view->managed;
}
