/* Unit tests of the next shard's name (namespace_next_shard_name): the names sharded
 * checkpoints use, and names from a listing that only look like them. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "namespace.h"

static void check_next(const char *name, const char *expected)
{
    char out[300];
    bool found = namespace_next_shard_name(name, out, sizeof out);
    bool right = found == (expected != NULL) && (!found || strcmp(out, expected) == 0);
    if (!right)
        fprintf(stderr, "after %s: %s, expected %s\n", name, found ? out : "none",
                expected ? expected : "none");
    CHECK(right);
}

static void test_sharded_checkpoints(void)
{
    check_next("model-00001-of-00004.safetensors", "model-00002-of-00004.safetensors");
    check_next("model-00009-of-00010.safetensors", "model-00010-of-00010.safetensors");
    check_next("diffusion_pytorch_model-00002-of-00003.safetensors",
               "diffusion_pytorch_model-00003-of-00003.safetensors");
    check_next("pytorch_model-1-of-3.bin", "pytorch_model-2-of-3.bin");
    check_next("model-00004-of-00004.safetensors", NULL);   /* the last one */
}

static void test_names_that_only_look_like_shards(void)
{
    check_next("model.safetensors", NULL);
    check_next("-of-", NULL);
    check_next("-of-00002", NULL);
    check_next("x-of-00002", NULL);                          /* no index */
    check_next("x-00001-of-", NULL);                         /* no total */
    check_next("x-001-of-0004.safetensors", NULL);           /* counters of two widths */
    check_next("x-0000000001-of-0000000002.bin", NULL);      /* past 9 digits */
    check_next("x-00003-of-00002.bin", NULL);                /* past the total */
    check_next("x-00000-of-00000.bin", NULL);
}

static void test_the_output_is_bounded(void)
{
    char name[256];
    memset(name, 'a', sizeof name);
    memcpy(name + 255 - strlen("-00001-of-00002"), "-00001-of-00002", strlen("-00001-of-00002"));
    name[255] = '\0';
    char out[256], small[8];
    CHECK(namespace_next_shard_name(name, out, sizeof out));
    CHECK_EQ_INT(strlen(out), 255);
    CHECK(strcmp(out + 255 - strlen("-00002-of-00002"), "-00002-of-00002") == 0);
    CHECK(!namespace_next_shard_name(name, small, sizeof small));
}

int main(void)
{
    test_sharded_checkpoints();
    test_names_that_only_look_like_shards();
    test_the_output_is_bounded();
    return check_finish("test_shard_names");
}
