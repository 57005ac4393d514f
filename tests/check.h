/* check.h — the assertions of the C unit tests. A failed CHECK prints where and why and
 * counts; check_finish() returns the process exit status. */
#ifndef HUBFS_CHECK_H
#define HUBFS_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        check_count++;                                                                   \
        if (!(cond)) {                                                                   \
            check_failures++;                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
        }                                                                                \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                               \
    do {                                                                                 \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                  \
        check_count++;                                                                   \
        if (check_a_ != check_b_) {                                                      \
            check_failures++;                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld vs %lld)\n", __FILE__,  \
                    __LINE__, #a, #b, check_a_, check_b_);                               \
        }                                                                                \
    } while (0)

#define CHECK_STR_CONTAINS(haystack, needle)                                             \
    do {                                                                                 \
        const char *check_h_ = (haystack), *check_n_ = (needle);                         \
        check_count++;                                                                   \
        if (!check_h_ || !strstr(check_h_, check_n_)) {                                  \
            check_failures++;                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: \"%s\" does not contain \"%s\"\n",     \
                    __FILE__, __LINE__, check_h_ ? check_h_ : "(null)", check_n_);       \
        }                                                                                \
    } while (0)

static inline int check_finish(const char *suite)
{
    printf("%s: %d checks, %d failed\n", suite, check_count, check_failures);
    return check_failures ? 1 : 0;
}

#endif
