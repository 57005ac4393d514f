/* pattern_reference.h — the TP-plan pattern rule (`*` is one or more characters other than
 * '.', everything else matches itself) written the slow, obvious way: dynamic programming
 * over pattern and name positions. test_plan.c and the fuzzer check tp_pattern_match against
 * it; it is quadratic, so callers keep its inputs small. */
#ifndef HUBFS_TESTS_PATTERN_REFERENCE_H
#define HUBFS_TESTS_PATTERN_REFERENCE_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static inline bool reference_pattern_match(const char *pattern, const char *name)
{
    size_t plen = strlen(pattern), nlen = strlen(name), width = nlen + 1;
    /* rest[i * width + j]: pattern[i..] matches name[j..] */
    bool *rest = calloc((plen + 1) * width, sizeof *rest);
    if (!rest) abort();
    rest[plen * width + nlen] = true;
    for (size_t i = plen; i-- > 0;)
        for (size_t j = nlen; j-- > 0;) {
            bool one = rest[(i + 1) * width + j + 1];
            rest[i * width + j] = pattern[i] == '*'
                                      ? name[j] != '.' && (one || rest[i * width + j + 1])
                                      : pattern[i] == name[j] && one;
        }
    bool matched = rest[0];
    free(rest);
    return matched;
}

#endif
