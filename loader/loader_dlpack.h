/* loader_dlpack.h — a rank's tensors as DLPack tensors, the exchange format of PyTorch
 * (torch.from_dlpack / torch.utils.dlpack.from_dlpack), NumPy, JAX and CuPy: zero-copy views of
 * the rank's arena, in host memory (kDLCPU) or on its GPU (kDLCUDA, device K), each holding a
 * reference to the rank (loader_rank_retain) until the consumer calls its deleter. So the arena
 * lives as long as any tensor made from it, whatever the loader's caller does with the rank.
 *
 * The types below are DLPack's (dlpack.h, the unversioned DLManagedTensor of DLPack 0.8 and
 * later, which every consumer still takes); when dlpack/dlpack.h was included first, its
 * definitions are used instead. Data is compact row-major (strides NULL), 256-byte aligned. */
#ifndef HUBFS_LOADER_DLPACK_H
#define HUBFS_LOADER_DLPACK_H

#include "loader.h"

#include <stddef.h>
#include <stdint.h>

#if !defined(DLPACK_MAJOR_VERSION) && !defined(DLPACK_VERSION)
typedef enum { kDLCPU = 1, kDLCUDA = 2 } DLDeviceType;

typedef struct {
    DLDeviceType device_type;
    int32_t device_id;
} DLDevice;

typedef enum {
    kDLInt = 0U,
    kDLUInt = 1U,
    kDLFloat = 2U,
    kDLBfloat = 4U,
    kDLComplex = 5U,
    kDLBool = 6U,
    kDLFloat8_e4m3fn = 10U,
    kDLFloat8_e4m3fnuz = 11U,
    kDLFloat8_e5m2 = 12U,
    kDLFloat8_e5m2fnuz = 13U,
    kDLFloat8_e8m0fnu = 14U,
} DLDataTypeCode;

typedef struct {
    uint8_t code;
    uint8_t bits;
    uint16_t lanes;
} DLDataType;

typedef struct {
    void *data;
    DLDevice device;
    int32_t ndim;
    DLDataType dtype;
    int64_t *shape;
    int64_t *strides;
    uint64_t byte_offset;
} DLTensor;

typedef struct DLManagedTensor {
    DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct DLManagedTensor *self);
} DLManagedTensor;
#endif

/* Export the tensor's bytes as a 1-D uint8 tensor instead of its dtype: for dtypes a consumer
 * lacks (view them as its own type, e.g. torch's .view(torch.float8_e4m3fn)), and for the
 * sub-byte ones (F4, F6_*), which DLPack cannot hold unpadded. */
#define LOADER_DLPACK_BYTES 1u

/* Tensor `index` of the rank as a DLPack tensor holding a reference to the rank; hand it to a
 * consumer (in Python, in a "dltensor" capsule), or call its deleter. NULL with a message when
 * the dtype has no DLPack type (use LOADER_DLPACK_BYTES) or memory is short. */
DLManagedTensor *loader_rank_dlpack(loader_rank *rank, size_t index, unsigned flags, char *err,
                                    size_t errlen);

#endif
