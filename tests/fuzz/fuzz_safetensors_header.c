/* Fuzzes the strict safetensors header parser. Input: 8 bytes little-endian = the data
 * buffer size (taken modulo 1 MiB), then the header JSON. Besides not crashing, whatever
 * the parser accepts must satisfy the format's invariants, checked here independently. The
 * whole input is also parsed as a file, for the length-prefix checks. */
#include "safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void check_invariants(const st_header *h)
{
    uint64_t covered = 0;
    for (size_t i = 0; i < h->count; i++) {
        const st_tensor *t = &h->tensors[i];
        uint64_t bits = st_element_count(t) * t->dtype->bits;
        if (t->begin != covered || t->end < t->begin || t->end - t->begin != bits / 8 || bits % 8)
            abort();
        if (st_find(h, t->name) == NULL) abort();
        covered = t->end;
    }
    if (covered != h->data_size) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024];
    st_header header;
    if (size >= 8) {
        uint64_t data_size = 0;
        for (int i = 7; i >= 0; i--) data_size = data_size << 8 | data[i];
        data_size %= 1u << 20;
        if (st_parse_header(data + 8, size - 8, data_size, &header, err, sizeof err) == 0) {
            check_invariants(&header);
            st_header_free(&header);
        } else if (err[0] == '\0') {
            abort(); /* every failure explains itself */
        }
    }
    if (st_parse_buffer(data, size, &header, err, sizeof err) == 0) {
        check_invariants(&header);
        st_header_free(&header);
    }
    return 0;
}
