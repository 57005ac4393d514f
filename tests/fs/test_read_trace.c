/* Unit tests of the read trace's file (read_trace.h): one line of nine tab-separated fields per
 * read whatever the names hold, times relative to the trace's start, and a full disk stopping
 * the trace with its reason once instead of failing reads. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "read_trace.h"

static size_t count_char(const char *text, char c)
{
    size_t n = 0;
    for (; *text; text++)
        n += *text == c;
    return n;
}

static char *slurp(const char *path)
{
    FILE *in = fopen(path, "r");
    if (!in)
        return NULL;
    static char text[1 << 16];
    size_t n = fread(text, 1, sizeof text - 1, in);
    text[n] = '\0';
    fclose(in);
    return text;
}

static void test_names_cannot_break_lines_or_fields(void)
{
    char path[] = "/tmp/hubfs-trace-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    read_trace *trace = NULL;
    CHECK_EQ_INT(read_trace_open(path, &trace), 0);
    int64_t at = 5000000000;
    read_trace_entry plain = {.repo = "org/m@main", .path = "model.safetensors", .tensor = "lm_head.weight",
                              .offset = 4096, .length = 131072, .arrived_ns = at, .answered_ns = at + 2500000,
                              .ahead_bytes = 1 << 20};
    read_trace_entry odd = {.repo = "org/m@main", .path = "a\tb\nc\\d.bin", .tensor = NULL, .offset = 0,
                            .length = 1, .arrived_ns = at, .answered_ns = at, .error = EIO};
    CHECK_EQ_INT(read_trace_write(trace, &plain), 0);
    CHECK_EQ_INT(read_trace_write(trace, &odd), 0);
    read_trace_close(trace);

    char *text = slurp(path);
    CHECK(text != NULL);
    if (text) {
        CHECK_EQ_INT(count_char(text, '\n'), 3);          /* the column names, then one line per read */
        CHECK_EQ_INT(count_char(text, '\t'), 3 * 8);      /* nine fields each */
        CHECK_STR_CONTAINS(text, "\t2.500\torg/m@main\tmodel.safetensors\t4096\t131072\t1048576\tok\tlm_head.weight\n");
        CHECK_STR_CONTAINS(text, "\ta\\x09b\\x0ac\\x5cd.bin\t0\t1\t0\tEIO\t-\n");
    }
    unlink(path);
}

static void test_a_full_disk_stops_the_trace_once(void)
{
    read_trace *trace = NULL;
    if (access("/dev/full", W_OK) != 0) {
        fprintf(stderr, "no writable /dev/full: the full-disk case is not checked here\n");
        CHECK(access("/dev/full", F_OK) != 0);   /* only a machine without it may skip */
        return;
    }
    CHECK_EQ_INT(read_trace_open("/dev/full", &trace), 0);
    read_trace_entry entry = {.repo = "org/m@main", .path = "f", .length = 1};
    int first_failure = 0, failures = 0;
    /* Buffered: the failure shows when a write reaches the file (within 64 Ki lines at most). */
    for (int i = 0; i < 65536; i++) {
        int stopped = read_trace_write(trace, &entry);
        failures += stopped != 0;
        if (stopped && !first_failure)
            first_failure = stopped;
    }
    read_trace_close(trace);
    CHECK_EQ_INT(first_failure, ENOSPC);
    CHECK_EQ_INT(failures, 1);
}

static void test_an_unwritable_path_says_why(void)
{
    read_trace *trace = NULL;
    CHECK_EQ_INT(read_trace_open("/nonexistent-hubfs-dir/trace.tsv", &trace), ENOENT);
    CHECK(trace == NULL);
}

int main(void)
{
    test_names_cannot_break_lines_or_fields();
    test_a_full_disk_stops_the_trace_once();
    test_an_unwritable_path_says_why();
    return check_finish("read_trace");
}
