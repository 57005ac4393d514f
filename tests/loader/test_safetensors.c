/* The strict safetensors header parser: valid headers parse to the right tensors, and every
 * kind of bad header fails with a message saying what is wrong (never a crash). */
#include "check.h"
#include "safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static char err[1024];

static int parse(const char *json, uint64_t data_size, st_header *h)
{
    err[0] = '\0';
    return st_parse_header((const uint8_t *)json, strlen(json), data_size, h, err, sizeof err);
}

/* The header must fail and the message must contain `expected`. */
static void expect_error(const char *json, uint64_t data_size, const char *expected)
{
    st_header h;
    int rc = parse(json, data_size, &h);
    CHECK_EQ_INT(rc, -1);
    CHECK_STR_CONTAINS(err, expected);
    if (rc == 0) st_header_free(&h);
}

static void test_valid_header(void)
{
    st_header h;
    const char *json = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[4,28]},"
                       "\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4],\"extra\":[1.5]}}";
    CHECK_EQ_INT(parse(json, 28, &h), 0);
    CHECK_EQ_INT(h.count, 2);
    CHECK(strcmp(h.tensors[0].name, "a") == 0); /* sorted by offset */
    CHECK(strcmp(h.tensors[0].dtype->name, "BF16") == 0);
    CHECK_EQ_INT(h.tensors[1].ndim, 2);
    CHECK_EQ_INT(h.tensors[1].shape[1], 3);
    CHECK_EQ_INT(h.tensors[1].begin, 4);
    CHECK_EQ_INT(h.metadata_count, 1);
    CHECK(strcmp(h.metadata[0].value, "pt") == 0);
    CHECK(st_find(&h, "b") == &h.tensors[1]);
    CHECK(st_find(&h, "c") == NULL);
    st_header_free(&h);
}

static void test_whitespace_scalars_and_empty(void)
{
    st_header h;
    CHECK_EQ_INT(parse(" \n\t{\"s\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[0,8]}}    ", 8, &h), 0);
    CHECK_EQ_INT(h.count, 1);
    CHECK_EQ_INT(st_element_count(&h.tensors[0]), 1);
    st_header_free(&h);
    CHECK_EQ_INT(parse("{}", 0, &h), 0);
    CHECK_EQ_INT(h.count, 0);
    st_header_free(&h);
    /* Zero-sized tensors take no bytes, even at the same offset. */
    CHECK_EQ_INT(parse("{\"z\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[0,0]},"
                       "\"y\":{\"dtype\":\"I8\",\"shape\":[0],\"data_offsets\":[0,0]},"
                       "\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, &h), 0);
    st_header_free(&h);
    /* The largest u64 is a valid dimension when another one is 0; numbers inside strings
     * and unknown fields do not confuse the reading of the real ones. */
    CHECK_EQ_INT(parse("{\"__metadata__\":{\"n\":\"-1.5e3\"},\"z\":{\"x\":[-1.5,2e9],\"dtype\":\"F32\","
                       "\"shape\":[18446744073709551615,0],\"data_offsets\":[0,0]},"
                       "\"y\":{\"dtype\":\"I8\",\"shape\":[3],\"data_offsets\":[0,3]}}", 3, &h), 0);
    CHECK(h.count == 2 && h.tensors[0].shape[0] == UINT64_MAX);
    CHECK_EQ_INT(h.tensors[1].end, 3);
    st_header_free(&h);
}

static void test_packed_dtypes(void)
{
    st_header h;
    CHECK_EQ_INT(parse("{\"p\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,2]}}", 2, &h), 0);
    st_header_free(&h);
    CHECK_EQ_INT(parse("{\"p\":{\"dtype\":\"F6_E2M3\",\"shape\":[2,2],\"data_offsets\":[0,3]}}", 3, &h), 0);
    st_header_free(&h);
    expect_error("{\"p\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2, "whole bytes");
    expect_error("{\"p\":{\"dtype\":\"F6_E3M2\",\"shape\":[3],\"data_offsets\":[0,3]}}", 3, "whole bytes");
}

static void test_every_dtype_size(void)
{
    static const struct { const char *name; unsigned bits; } expected[] = {
        {"BOOL", 8}, {"U8", 8}, {"I8", 8}, {"F8_E4M3", 8}, {"F8_E5M2", 8}, {"F8_E8M0", 8},
        {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"I16", 16}, {"U16", 16}, {"F16", 16},
        {"BF16", 16}, {"I32", 32}, {"U32", 32}, {"F32", 32}, {"I64", 64}, {"U64", 64},
        {"F64", 64}, {"C64", 64}, {"F4", 4}, {"F6_E2M3", 6}, {"F6_E3M2", 6}};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        const st_dtype_info *d = st_dtype_lookup(expected[i].name);
        CHECK(d != NULL);
        if (d) CHECK_EQ_INT(d->bits, expected[i].bits);
    }
    CHECK(st_dtype_lookup("F17") == NULL);
    CHECK(st_dtype_lookup("bf16") == NULL);
}

static void test_json_shape_errors(void)
{
    expect_error("", 0, "not a JSON object");
    expect_error("   ", 0, "not a JSON object");
    expect_error("[]", 0, "must start with '{'");
    expect_error("{\"a\":", 0, "not valid JSON");
    expect_error("{} x", 0, "trailing bytes");
    expect_error("{}{}", 0, "trailing bytes");
    expect_error("{\"a\":1}", 0, "tensor 'a': entry is not an object");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "tensor 'a': missing 'data_offsets'");
    expect_error("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "tensor 'a': missing 'dtype'");
    expect_error("{\"a\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype is not a string");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4, "shape is not an array");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "data_offsets is not [begin, end]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", 4, "data_offsets is not");
    expect_error("{\"a\":{\"dtype\":\"F17\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype 'F17'");
}

static void test_number_errors(void)
{
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "tensor 'a': shape[0]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,2],\"data_offsets\":[0,4]}}",
                 4, "overflows");
    /* Integers are read from the text: doubles would take these for 1, 1000 and 1. */
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1e3],\"data_offsets\":[0,4000]}}", 4000, "shape[0]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4, "data_offsets is not");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[18446744073709551616,0],\"data_offsets\":[0,0]}}",
                 0, "shape[0] is not an integer in [0, 2^64)");
    /* 2^53 + 1 is exact here, so the mismatch is seen (a double would round it to 2^53). */
    expect_error("{\"a\":{\"dtype\":\"U8\",\"shape\":[9007199254740992],"
                 "\"data_offsets\":[0,9007199254740993]}}", 9007199254740993ull, "needs 9007199254740992");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "data_offsets is not");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "before begin");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "needs 8");
}

static void test_tiling_errors(void)
{
    const char *overlap = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                          "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
    expect_error(overlap, 8, "overlap");
    const char *hole = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}";
    expect_error(hole, 12, "tensor 'b': hole of 4 bytes");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "hole");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 2, "beyond the data buffer");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 9, "data buffer is 9 bytes");
    expect_error("{}", 3, "data buffer is 3 bytes");
}

static void test_duplicates_and_metadata(void)
{
    expect_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
                 "key 'a' appears twice");
    expect_error("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                 "tensor 'a': key 'dtype' appears twice");
    expect_error("{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ value of 'k' is not a string");
    expect_error("{\"__metadata__\":[\"k\"]}", 0, "__metadata__ is not an object");
    expect_error("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "appears twice");
}

static void test_text_errors(void)
{
    expect_error("{\"a\x01\":{}}", 0, "control character");
    expect_error("{\"\xff\":{}}", 0, "not valid UTF-8");
    expect_error("{\"\xc0\xaf\":{}}", 0, "not valid UTF-8"); /* overlong '/' */
    expect_error("{\"\xed\xa0\x80\":{}}", 0, "not valid UTF-8"); /* a surrogate */
    st_header h;
    const char nul[] = "{}\0   ";
    CHECK_EQ_INT(st_parse_header((const uint8_t *)nul, sizeof nul - 1, 0, &h, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "control character");
}

static void test_file_framing(void)
{
    CHECK_EQ_INT(st_check_header_length(10, 7, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "shorter than the 8-byte");
    CHECK_EQ_INT(st_check_header_length(ST_MAX_HEADER_BYTES + 1, 1ull << 40, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "exceeds the limit");
    CHECK_EQ_INT(st_check_header_length(100, 100, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "beyond the end of the file");
    CHECK_EQ_INT(st_check_header_length(92, 100, err, sizeof err), 0);

    const char *json = "{\"t\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}    ";
    size_t n = strlen(json);
    uint8_t file[128] = {(uint8_t)n};
    memcpy(file + 8, json, n);
    size_t size = 8 + n + 4;
    st_header h;
    CHECK_EQ_INT(st_parse_buffer(file, size, &h, err, sizeof err), 0);
    CHECK_EQ_INT(h.data_start, 8 + n);
    CHECK_EQ_INT(h.data_size, 4);
    st_header_free(&h);
    CHECK_EQ_INT(st_parse_buffer(file, 7, &h, err, sizeof err), -1);
    CHECK_EQ_INT(st_parse_buffer(file, size - 1, &h, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, "beyond the data buffer of 3 bytes");
}

int main(void)
{
    test_valid_header();
    test_whitespace_scalars_and_empty();
    test_packed_dtypes();
    test_every_dtype_size();
    test_json_shape_errors();
    test_number_errors();
    test_tiling_errors();
    test_duplicates_and_metadata();
    test_text_errors();
    test_file_framing();
    return check_finish("test_safetensors");
}
