/* The strict safetensors header parser. cJSON does the JSON grammar; everything it lets
 * through that the format forbids (trailing garbage, duplicate keys, control characters,
 * integers written as 1.0 or 01, integers beyond 2^53 rounded by doubles) is checked here. */
#include "safetensors.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static const st_dtype_info dtypes[] = {
    {"BOOL", 8},        {"U8", 8},          {"I8", 8},           {"F8_E4M3", 8},
    {"F8_E5M2", 8},     {"F8_E8M0", 8},     {"F8_E4M3FNUZ", 8},  {"F8_E5M2FNUZ", 8},
    {"I16", 16},        {"U16", 16},        {"F16", 16},         {"BF16", 16},
    {"I32", 32},        {"U32", 32},        {"F32", 32},         {"I64", 64},
    {"U64", 64},        {"F64", 64},        {"C64", 64},         {"F4", 4},
    {"F6_E2M3", 6},     {"F6_E3M2", 6},
};

/* State of one parse: the header text's number tokens and a scratch array for key checks. */
typedef struct parse_ctx {
    const char **numbers; /* start of each number token, in document order */
    size_t number_count, number_cap;
    const char **scratch;
    size_t scratch_cap;
} parse_ctx;

const st_dtype_info *st_dtype_lookup(const char *name)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (strcmp(dtypes[i].name, name) == 0)
            return &dtypes[i];
    return NULL;
}

int st_check_header_length(uint64_t header_len, uint64_t file_size, char *err, size_t errlen)
{
    if (file_size < 8)
        return fail(err, errlen, "file is %llu bytes, shorter than the 8-byte header length",
                    (unsigned long long)file_size);
    if (header_len > ST_MAX_HEADER_BYTES)
        return fail(err, errlen, "header length %llu exceeds the limit of %llu bytes",
                    (unsigned long long)header_len, ST_MAX_HEADER_BYTES);
    if (header_len > file_size - 8)
        return fail(err, errlen, "header length %llu is beyond the end of the file (%llu bytes)",
                    (unsigned long long)header_len, (unsigned long long)file_size);
    return 0;
}

static int is_json_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFY), and no raw control
 * characters inside strings — both are invalid JSON that cJSON would accept. */
static int check_text(const uint8_t *s, size_t len, char *err, size_t errlen)
{
    int in_string = 0, escaped = 0;
    for (size_t i = 0; i < len;) {
        uint8_t c = s[i];
        if (c < 0x80) {
            if (c < 0x20 && (in_string || !is_json_space(c)))
                return fail(err, errlen, "header has a control character (0x%02x) at byte %zu", c, i);
            if (in_string) {
                if (escaped) escaped = 0;
                else if (c == '\\') escaped = 1;
                else if (c == '"') in_string = 0;
            } else if (c == '"') {
                in_string = 1;
            }
            i++;
            continue;
        }
        escaped = 0;
        size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
        if (n == 0 || c > 0xF4 || i + n > len)
            return fail(err, errlen, "header is not valid UTF-8 (byte %zu)", i);
        uint32_t cp = c & (0xFF >> (n + 1));
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return fail(err, errlen, "header is not valid UTF-8 (byte %zu)", i + k);
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return fail(err, errlen, "header is not valid UTF-8 (byte %zu)", i);
        i += n;
    }
    return 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The first key that appears twice in `object`, or NULL. cJSON keeps duplicates. */
static const char *find_duplicate_key(const cJSON *object, parse_ctx *ctx)
{
    size_t n = 0;
    for (const cJSON *item = object->child; item; item = item->next) {
        if (n == ctx->scratch_cap) {
            size_t grown = ctx->scratch_cap ? ctx->scratch_cap * 2 : 16;
            const char **p = realloc(ctx->scratch, grown * sizeof *p);
            if (!p) return "(out of memory)";
            ctx->scratch = p;
            ctx->scratch_cap = grown;
        }
        ctx->scratch[n++] = item->string;
    }
    if (n > 1) qsort(ctx->scratch, n, sizeof *ctx->scratch, compare_names);
    for (size_t i = 1; i < n; i++)
        if (strcmp(ctx->scratch[i - 1], ctx->scratch[i]) == 0)
            return ctx->scratch[i];
    return NULL;
}

/* cJSON keeps numbers only as doubles, which would take 1.0, 1e3 or 01 for integers and
 * round anything above 2^53; the format's integers are u64. So the number tokens of the text
 * are listed in document order (the order of cJSON's items too) and each number item's
 * valueint, unused here otherwise, is set to its token's index. */
static int collect_number_tokens(const char *text, size_t len, parse_ctx *ctx)
{
    int in_string = 0, escaped = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (escaped) escaped = 0;
            else if (c == '\\') escaped = 1;
            else if (c == '"') in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            if (ctx->number_count == ctx->number_cap) {
                size_t grown = ctx->number_cap ? ctx->number_cap * 2 : 64;
                const char **p = realloc(ctx->numbers, grown * sizeof *p);
                if (!p) return -1;
                ctx->numbers = p;
                ctx->number_cap = grown;
            }
            ctx->numbers[ctx->number_count++] = text + i;
            while (i + 1 < len && strchr("0123456789+-.eE", text[i + 1]) && text[i + 1]) i++;
        }
    }
    return 0;
}

static int index_number_items(cJSON *item, size_t *next, size_t total)
{
    for (; item; item = item->next) {
        if (cJSON_IsNumber(item)) {
            if (*next >= total) return -1;
            item->valueint = (int)(*next)++;
        }
        if (item->child && index_number_items(item->child, next, total) != 0) return -1;
    }
    return 0;
}

/* An unsigned 64-bit integer written as JSON digits (no sign, fraction, exponent or
 * leading zero). */
static int read_uint(const parse_ctx *ctx, const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item)) return -1;
    const char *p = ctx->numbers[item->valueint];
    if (p[0] == '0' && p[1] >= '0' && p[1] <= '9') return -1;
    uint64_t value = 0;
    size_t digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++)
        if (__builtin_mul_overflow(value, 10, &value) ||
            __builtin_add_overflow(value, (uint64_t)(*p - '0'), &value))
            return -1;
    if (digits == 0 || *p == '.' || *p == 'e' || *p == 'E') return -1;
    *out = value;
    return 0;
}

static int parse_metadata(const cJSON *object, st_header *out, char *err, size_t errlen)
{
    if (!cJSON_IsObject(object))
        return fail(err, errlen, "__metadata__ is not an object");
    size_t n = (size_t)cJSON_GetArraySize(object);
    out->metadata = calloc(n ? n : 1, sizeof *out->metadata);
    if (!out->metadata) return fail(err, errlen, "out of memory");
    for (const cJSON *item = object->child; item; item = item->next) {
        if (!cJSON_IsString(item))
            return fail(err, errlen, "__metadata__ value of '%s' is not a string", item->string);
        st_metadata_entry *e = &out->metadata[out->metadata_count++];
        e->key = strdup(item->string);
        e->value = strdup(item->valuestring);
        if (!e->key || !e->value) return fail(err, errlen, "out of memory");
    }
    return 0;
}

/* The one field `key` of a tensor entry; duplicates were refused before. */
static const cJSON *field(const cJSON *entry, const char *key)
{
    for (const cJSON *item = entry->child; item; item = item->next)
        if (strcmp(item->string, key) == 0)
            return item;
    return NULL;
}

static int parse_shape(const parse_ctx *ctx, const cJSON *shape, st_tensor *t, uint64_t *bits,
                       char *err, size_t errlen)
{
    if (!cJSON_IsArray(shape))
        return fail(err, errlen, "tensor '%s': shape is not an array", t->name);
    t->ndim = (size_t)cJSON_GetArraySize(shape);
    if (t->ndim) {
        t->shape = calloc(t->ndim, sizeof *t->shape);
        if (!t->shape) return fail(err, errlen, "out of memory");
    }
    uint64_t count = 1;
    int overflow = 0;
    size_t d = 0;
    for (const cJSON *dim = shape->child; dim; dim = dim->next, d++) {
        if (read_uint(ctx, dim, &t->shape[d]) != 0)
            return fail(err, errlen, "tensor '%s': shape[%zu] is not an integer in [0, 2^64)",
                        t->name, d);
        /* A zero dimension makes the product 0 whatever else overflows. */
        if (!overflow && __builtin_mul_overflow(count, t->shape[d], &count)) overflow = 1;
    }
    for (d = 0; d < t->ndim; d++)
        if (t->shape[d] == 0) { count = 0; overflow = 0; }
    if (overflow || __builtin_mul_overflow(count, (uint64_t)t->dtype->bits, bits))
        return fail(err, errlen, "tensor '%s': element count × dtype size overflows 64 bits", t->name);
    if (*bits % 8 != 0)
        return fail(err, errlen, "tensor '%s': %llu elements of %s (%u bits) do not fill whole "
                    "bytes", t->name, (unsigned long long)count, t->dtype->name, t->dtype->bits);
    return 0;
}

static int parse_tensor(parse_ctx *ctx, const cJSON *entry, st_tensor *t, char *err, size_t errlen)
{
    if (!cJSON_IsObject(entry))
        return fail(err, errlen, "tensor '%s': entry is not an object", t->name);
    const char *dup = find_duplicate_key(entry, ctx);
    if (dup)
        return fail(err, errlen, "tensor '%s': key '%s' appears twice", t->name, dup);
    const cJSON *dtype = field(entry, "dtype"), *shape = field(entry, "shape");
    const cJSON *offsets = field(entry, "data_offsets");
    if (!dtype || !shape || !offsets)
        return fail(err, errlen, "tensor '%s': missing '%s'", t->name,
                    !dtype ? "dtype" : !shape ? "shape" : "data_offsets");
    if (!cJSON_IsString(dtype))
        return fail(err, errlen, "tensor '%s': dtype is not a string", t->name);
    t->dtype = st_dtype_lookup(dtype->valuestring);
    if (!t->dtype)
        return fail(err, errlen, "tensor '%s': unknown dtype '%s'", t->name, dtype->valuestring);
    uint64_t bits = 0;
    if (parse_shape(ctx, shape, t, &bits, err, errlen) != 0) return -1;
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 ||
        read_uint(ctx, offsets->child, &t->begin) != 0 ||
        read_uint(ctx, offsets->child->next, &t->end) != 0)
        return fail(err, errlen, "tensor '%s': data_offsets is not [begin, end] of integers in "
                    "[0, 2^64)", t->name);
    if (t->end < t->begin)
        return fail(err, errlen, "tensor '%s': data_offsets end %llu is before begin %llu", t->name,
                    (unsigned long long)t->end, (unsigned long long)t->begin);
    if (t->end - t->begin != bits / 8)
        return fail(err, errlen, "tensor '%s': data_offsets span %llu bytes but shape × %s "
                    "needs %llu", t->name, (unsigned long long)(t->end - t->begin),
                    t->dtype->name, (unsigned long long)(bits / 8));
    return 0;
}

static int compare_offsets(const void *a, const void *b)
{
    const st_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static int compare_tensor_names(const void *a, const void *b)
{
    return strcmp((*(const st_tensor *const *)a)->name, (*(const st_tensor *const *)b)->name);
}

/* Sorted by begin, the tensors must cover [0, data_size) with no overlap and no hole. */
static int check_tiling(st_header *h, char *err, size_t errlen)
{
    if (h->count > 1) qsort(h->tensors, h->count, sizeof *h->tensors, compare_offsets);
    uint64_t covered = 0;
    for (size_t i = 0; i < h->count; i++) {
        const st_tensor *t = &h->tensors[i];
        if (t->begin < covered)
            return fail(err, errlen, "tensor '%s': data_offsets [%llu, %llu) overlap the previous "
                        "tensor '%s'", t->name, (unsigned long long)t->begin,
                        (unsigned long long)t->end, h->tensors[i - 1].name);
        if (t->begin > covered)
            return fail(err, errlen, "tensor '%s': hole of %llu bytes before its data_offsets "
                        "[%llu, %llu)", t->name, (unsigned long long)(t->begin - covered),
                        (unsigned long long)t->begin, (unsigned long long)t->end);
        covered = t->end;
    }
    if (covered != h->data_size)
        return fail(err, errlen, covered > h->data_size
                    ? "tensors end at byte %llu, beyond the data buffer of %llu bytes"
                    : "tensors end at byte %llu but the data buffer is %llu bytes",
                    (unsigned long long)covered, (unsigned long long)h->data_size);
    h->by_name = malloc((h->count ? h->count : 1) * sizeof *h->by_name);
    if (!h->by_name) return fail(err, errlen, "out of memory");
    for (size_t i = 0; i < h->count; i++) h->by_name[i] = &h->tensors[i];
    if (h->count > 1) qsort(h->by_name, h->count, sizeof *h->by_name, compare_tensor_names);
    return 0;
}

static int parse_root(parse_ctx *ctx, const cJSON *root, st_header *out, char *err, size_t errlen)
{
    const char *dup = find_duplicate_key(root, ctx);
    if (dup) return fail(err, errlen, "key '%s' appears twice in the header", dup);
    size_t n = (size_t)cJSON_GetArraySize(root);
    out->tensors = calloc(n ? n : 1, sizeof *out->tensors);
    if (!out->tensors) return fail(err, errlen, "out of memory");
    for (const cJSON *item = root->child; item; item = item->next) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (parse_metadata(item, out, err, errlen) != 0) return -1;
            continue;
        }
        st_tensor *t = &out->tensors[out->count++];
        t->name = strdup(item->string);
        if (!t->name) return fail(err, errlen, "out of memory");
        if (parse_tensor(ctx, item, t, err, errlen) != 0) return -1;
    }
    return check_tiling(out, err, errlen);
}

/* Parses the NUL-terminated `text` of `len` bytes (its first non-space byte is '{'). */
static int parse_text(const char *text, size_t len, st_header *out, char *err, size_t errlen)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    parse_ctx ctx = {0};
    size_t indexed = 0;
    int rc = -1;
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t pos = at && at >= text && at <= text + len ? (size_t)(at - text) : len;
        fail(err, errlen, "header is not valid JSON (error near byte %zu)", pos);
        goto done;
    }
    for (const char *p = end; p < text + len; p++)
        if (!is_json_space((uint8_t)*p)) {
            fail(err, errlen, "header has trailing bytes after the JSON object (byte %zu)",
                 (size_t)(p - text));
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        fail(err, errlen, "header is not a JSON object");
        goto done;
    }
    if (collect_number_tokens(text, (size_t)(end - text), &ctx) != 0 ||
        index_number_items(root->child, &indexed, ctx.number_count) != 0 ||
        indexed != ctx.number_count) {
        fail(err, errlen, "header numbers could not be read (out of memory?)");
        goto done;
    }
    rc = parse_root(&ctx, root, out, err, errlen);
done:
    cJSON_Delete(root);
    free(ctx.numbers);
    free(ctx.scratch);
    return rc;
}

int st_parse_header(const uint8_t *json, size_t len, uint64_t data_size, st_header *out,
                    char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->data_size = data_size;
    if (check_text(json, len, err, errlen) != 0) return -1;
    size_t start = 0;
    while (start < len && is_json_space(json[start])) start++;
    if (start == len || json[start] != '{')
        return fail(err, errlen, "header is not a JSON object (it must start with '{')");
    /* cJSON reads up to the length given; a NUL-terminated copy keeps it inside bounds. */
    char *text = malloc(len + 1);
    if (!text) return fail(err, errlen, "out of memory for a %zu-byte header", len);
    memcpy(text, json, len);
    text[len] = '\0';
    int rc = parse_text(text, len, out, err, errlen);
    free(text);
    if (rc != 0) st_header_free(out);
    return rc;
}

int st_parse_buffer(const uint8_t *file, size_t size, st_header *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    uint64_t header_len = size >= 8 ? load_le64(file) : 0;
    if (st_check_header_length(header_len, size, err, errlen) != 0) return -1;
    if (st_parse_header(file + 8, (size_t)header_len, size - 8 - header_len, out, err, errlen) != 0)
        return -1;
    out->data_start = 8 + header_len;
    return 0;
}

int st_read_header(loader_file *file, const char *path, st_header *out, char *err, size_t errlen)
{
    char why[400];
    memset(out, 0, sizeof *out);
    uint64_t file_size = file->size;
    uint8_t prefix[8];
    uint64_t header_len = 0;
    if (file_size >= 8) {
        if (file->ops->read_at(file, 0, prefix, 8, why, sizeof why) != 0)
            return fail(err, errlen, "%s: %s", path, why);
        header_len = load_le64(prefix);
    }
    if (st_check_header_length(header_len, file_size, why, sizeof why) != 0)
        return fail(err, errlen, "%s: %s", path, why);
    uint8_t *json = malloc(header_len ? (size_t)header_len : 1);
    if (!json) return fail(err, errlen, "%s: out of memory for the header", path);
    int rc = header_len ? file->ops->read_at(file, 8, json, (size_t)header_len, why, sizeof why) : 0;
    if (rc == 0)
        rc = st_parse_header(json, (size_t)header_len, file_size - 8 - header_len, out, why,
                             sizeof why);
    free(json);
    if (rc != 0) return fail(err, errlen, "%s: %s", path, why);
    out->data_start = 8 + header_len;
    return 0;
}

const st_tensor *st_find(const st_header *header, const char *name)
{
    size_t lo = 0, hi = header->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(header->by_name[mid]->name, name);
        if (c == 0) return header->by_name[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

uint64_t st_element_count(const st_tensor *tensor)
{
    uint64_t n = 1;
    for (size_t d = 0; d < tensor->ndim; d++) n *= tensor->shape[d];
    return n;
}

void st_header_free(st_header *header)
{
    for (size_t i = 0; i < header->count; i++) {
        free(header->tensors[i].name);
        free(header->tensors[i].shape);
    }
    for (size_t i = 0; i < header->metadata_count; i++) {
        free(header->metadata[i].key);
        free(header->metadata[i].value);
    }
    free(header->tensors);
    free(header->by_name);
    free(header->metadata);
    memset(header, 0, sizeof *header);
}
