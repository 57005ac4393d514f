/* `hubfs inspect` and `hubfs load`: argument handling and output around loader.h. */
#include "loader.h"
#include "loader_cli.h"
#include "target.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define VERIFY_CHUNK (8u << 20)

static void inspect_usage(FILE *out)
{
    fprintf(out,
            "usage: hubfs inspect PATH [--json]\n\n"
            "Lists every tensor of a model (dtype, shape, bytes, shard, file offset) with totals\n"
            "per dtype and the parameter count. PATH is a .safetensors file or a model directory\n"
            "(model.safetensors, or model.safetensors.index.json and its shards), or without a\n"
            "mount hf://[datasets/]ORG/NAME[@REV][/PATH]. Reads headers only: on a hubfs mount or\n"
            "from hf:// no weight bytes are fetched.\n\n"
            "  --json   machine-readable output\n");
}

static void load_usage(FILE *out)
{
    fprintf(out,
            "usage: hubfs load PATH --tp N --rank R [--device cpu|cuda|cuda:K] [--plan FILE]\n"
            "                  [--save OUT.safetensors] [--threads T] [--chunk-mib M]\n\n"
            "Loads tensor-parallel rank R of N's slices of a model into host memory or a GPU,\n"
            "streaming through bounded buffers with T reads (default 8) of M MiB (default 8) in\n"
            "flight, and prints tensors, bytes, seconds and GB/s. PATH is as for inspect: a\n"
            "local path (a mount's too) or hf://[datasets/]ORG/NAME[@REV][/PATH].\n\n"
            "  --tp N        world size; default WORLD_SIZE, OMPI_COMM_WORLD_SIZE, SLURM_NTASKS, 1\n"
            "  --rank R      rank; default RANK, OMPI_COMM_WORLD_RANK, SLURM_PROCID, 0\n"
            "  --device D    cpu (default), cuda:K, or cuda: the one GPU the process sees when\n"
            "                there is one (a launcher that sets CUDA_VISIBLE_DEVICES per rank),\n"
            "                else cuda:<local rank> (LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_RANK,\n"
            "                SLURM_LOCALID)\n"
            "  --threads T   reads in flight (default 8; 32 from hf://)\n"
            "  --chunk-mib M bytes per read (default 8; 2 from hf://). A GPU load stages\n"
            "                through T + 2 pinned buffers of M MiB, never more than 1 GiB of\n"
            "                them (threads beyond what fits wait for a buffer)\n"
            "  --plan FILE   JSON {\"pattern\": \"style\"} merged over the model's plan: its entries\n"
            "                replace those with the same pattern, add the others and win where\n"
            "                both match; `*` matches one name component (a layer index); styles\n"
            "                colwise, rowwise, vocab, replicate. The model's plan is config.json's\n"
            "                base_model_tp_plan, else Llama rules; embeddings and the LM head are\n"
            "                split by vocabulary unless an entry matches them\n"
            "  --save OUT    write the rank's tensors to OUT as a safetensors file (written aside,\n"
            "                then renamed over OUT; a symlink at OUT is replaced, not followed)\n");
}

/* The length of the well-formed UTF-8 sequence at s (1 to 4 bytes), or 0. */
static size_t utf8_sequence(const unsigned char *s)
{
    unsigned c = s[0];
    size_t n = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
             : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (n <= 1) return n;
    uint32_t cp = c & (0x7Fu >> n);
    for (size_t k = 1; k < n; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0; /* stops at the NUL too */
        cp = cp << 6 | (s[k] & 0x3Fu);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* `s` made safe for a terminal (malloc'd, NULL when out of memory). Tensor and shard names
 * come from the model files, and a control character in them (ESC, CR, BEL...) would drive
 * the terminal: C0 controls, DEL and bytes of invalid UTF-8 become \xNN, C1 controls \u00NN
 * (terminals act on those too), and a backslash \\, so that what is shown is unambiguous. */
static char *terminal_safe(const char *s)
{
    size_t len = strlen(s);
    char *out = malloc(4 * len + 1), *o = out; /* at most 4 output bytes per input byte */
    if (!out) return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t n = utf8_sequence(p);
        if (n == 0 || *p < 0x20 || *p == 0x7F) {
            o += sprintf(o, "\\x%02x", *p++);
        } else if (*p == '\\') {
            o += sprintf(o, "\\\\");
            p++;
        } else if (n == 2 && p[0] == 0xC2 && p[1] < 0xA0) {
            o += sprintf(o, "\\u%04x", p[1]);
            p += 2;
        } else {
            memcpy(o, p, n);
            o += n;
            p += n;
        }
    }
    *o = '\0';
    return out;
}

/* `s` with each byte of invalid UTF-8 replaced by U+FFFD (malloc'd, NULL when out of
 * memory): cJSON escapes control characters but copies bytes, and JSON must be UTF-8.
 * Shard names from an index file are not checked for UTF-8 as header names are. */
static char *valid_utf8(const char *s)
{
    char *out = malloc(3 * strlen(s) + 1), *o = out;
    if (!out) return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        size_t n = utf8_sequence(p);
        if (n == 0) {
            memcpy(o, "\xEF\xBF\xBD", 3);
            o += 3;
            p++;
        } else {
            memcpy(o, p, n);
            o += n;
            p += n;
        }
    }
    *o = '\0';
    return out;
}

/* Prints "hubfs COMMAND: MESSAGE": loader errors quote names from the model files. */
static void report_error(const char *command, const char *message)
{
    char *safe = terminal_safe(message);
    fprintf(stderr, "hubfs %s: %s\n", command, safe ? safe : "out of memory");
    free(safe);
}

static const char *format_shape(const loader_tensor_info *t, char *buf, size_t len)
{
    size_t used = (size_t)snprintf(buf, len, "[");
    for (size_t d = 0; d < t->ndim && used < len; d++)
        used += (size_t)snprintf(buf + used, len - used, "%s%" PRIu64, d ? ", " : "", t->shape[d]);
    if (used < len) snprintf(buf + used, len - used, "]");
    return buf;
}

typedef struct dtype_total {
    const char *dtype;
    uint64_t tensors, bytes, parameters;
} dtype_total;

static uint64_t element_count(const loader_tensor_info *t)
{
    uint64_t n = 1;
    for (size_t d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

/* Totals per dtype in order of first appearance; `totals` has room for every tensor. */
static size_t sum_by_dtype(const loader_model *m, dtype_total *totals)
{
    size_t kinds = 0;
    for (size_t i = 0; i < loader_model_tensor_count(m); i++) {
        loader_tensor_info t;
        loader_model_tensor(m, i, &t);
        size_t k = 0;
        while (k < kinds && strcmp(totals[k].dtype, t.dtype) != 0) k++;
        if (k == kinds) totals[kinds++] = (dtype_total){t.dtype, 0, 0, 0};
        totals[k].tensors++;
        totals[k].bytes += t.nbytes;
        totals[k].parameters += element_count(&t);
    }
    return kinds;
}

/* The terminal-safe names of the model's tensors and the longest one's length. */
static char **safe_names(const loader_model *m, size_t *longest)
{
    size_t count = loader_model_tensor_count(m);
    char **names = calloc(count ? count : 1, sizeof *names);
    for (size_t i = 0; names && i < count; i++) {
        loader_tensor_info t;
        loader_model_tensor(m, i, &t);
        if (!(names[i] = terminal_safe(t.name))) {
            while (i > 0) free(names[--i]);
            free(names);
            return NULL;
        }
        if (strlen(names[i]) > *longest) *longest = strlen(names[i]);
    }
    return names;
}

static int print_inspect_text(const char *path, const loader_model *m, const dtype_total *totals,
                              size_t kinds)
{
    size_t count = loader_model_tensor_count(m), name_width = 4;
    char **names = safe_names(m, &name_width), *safe_path = terminal_safe(path);
    if (!names || !safe_path) {
        free(names);
        free(safe_path);
        fprintf(stderr, "hubfs inspect: out of memory\n");
        return 1;
    }
    printf("%s: %zu tensors\n\n", safe_path, count);
    printf("%-*s  %-11s %-22s %14s  %-36s %14s\n", (int)name_width, "NAME", "DTYPE", "SHAPE",
           "BYTES", "SHARD", "OFFSET");
    for (size_t i = 0; i < count; i++) {
        loader_tensor_info t;
        char shape[256];
        loader_model_tensor(m, i, &t);
        char *shard = terminal_safe(t.shard);
        printf("%-*s  %-11s %-22s %14" PRIu64 "  %-36s %14" PRIu64 "\n", (int)name_width, names[i],
               t.dtype, format_shape(&t, shape, sizeof shape), t.nbytes, shard ? shard : "?",
               t.offset);
        free(shard);
        free(names[i]);
    }
    free(names);
    free(safe_path);
    uint64_t parameters = 0, bytes = 0;
    printf("\n%-11s %10s %16s %16s\n", "DTYPE", "TENSORS", "BYTES", "PARAMETERS");
    for (size_t k = 0; k < kinds; k++) {
        printf("%-11s %10" PRIu64 " %16" PRIu64 " %16" PRIu64 "\n", totals[k].dtype,
               totals[k].tensors, totals[k].bytes, totals[k].parameters);
        parameters += totals[k].parameters;
        bytes += totals[k].bytes;
    }
    printf("\nparameters: %" PRIu64 " (%.3f B), tensor bytes: %" PRIu64 " (%.3f GB)\n", parameters,
           (double)parameters / 1e9, bytes, (double)bytes / 1e9);
    return 0;
}

static cJSON *tensor_json(const loader_model *m, size_t i)
{
    loader_tensor_info t;
    uint64_t begin, end;
    loader_model_tensor(m, i, &t);
    loader_model_data_offsets(m, i, &begin, &end);
    cJSON *o = cJSON_CreateObject();
    char *name = valid_utf8(t.name), *shard = valid_utf8(t.shard);
    cJSON_AddStringToObject(o, "name", name ? name : "");
    cJSON_AddStringToObject(o, "dtype", t.dtype);
    cJSON *shape = cJSON_AddArrayToObject(o, "shape");
    for (size_t d = 0; d < t.ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t.shape[d]));
    cJSON_AddNumberToObject(o, "bytes", (double)t.nbytes);
    cJSON_AddStringToObject(o, "shard", shard ? shard : "");
    free(name);
    free(shard);
    cJSON_AddNumberToObject(o, "offset", (double)t.offset);
    cJSON *offsets = cJSON_AddArrayToObject(o, "data_offsets");
    cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)begin));
    cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)end));
    return o;
}

char *loader_inspect_json(const loader_model *m)
{
    size_t count = loader_model_tensor_count(m);
    dtype_total *totals = calloc(count ? count : 1, sizeof *totals);
    if (!totals) return NULL;
    size_t kinds = sum_by_dtype(m, totals);
    cJSON *root = cJSON_CreateObject(), *tensors = cJSON_AddArrayToObject(root, "tensors");
    cJSON *dtypes = cJSON_AddObjectToObject(root, "dtypes");
    for (size_t i = 0; i < loader_model_tensor_count(m); i++) cJSON_AddItemToArray(tensors, tensor_json(m, i));
    uint64_t parameters = 0, bytes = 0;
    for (size_t k = 0; k < kinds; k++) {
        cJSON *d = cJSON_AddObjectToObject(dtypes, totals[k].dtype);
        cJSON_AddNumberToObject(d, "tensors", (double)totals[k].tensors);
        cJSON_AddNumberToObject(d, "bytes", (double)totals[k].bytes);
        cJSON_AddNumberToObject(d, "parameters", (double)totals[k].parameters);
        parameters += totals[k].parameters;
        bytes += totals[k].bytes;
    }
    cJSON_AddNumberToObject(root, "parameters", (double)parameters);
    cJSON_AddNumberToObject(root, "bytes", (double)bytes);
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    free(totals);
    return text;
}

static int print_inspect_json(const loader_model *m)
{
    char *text = loader_inspect_json(m);
    if (!text) {
        fprintf(stderr, "hubfs inspect: out of memory\n");
        return 1;
    }
    printf("%s\n", text);
    free(text);
    return 0;
}

int loader_cli_inspect(int argc, char **argv, loader_cli_opener open_model)
{
    static const struct option options[] = {
        {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        if (c == 'j') json = true;
        else if (c == 'h') return inspect_usage(stdout), 0;
        else return inspect_usage(stderr), 2;
    }
    if (optind != argc - 1) {
        fprintf(stderr, "hubfs inspect: expected one PATH\n\n");
        inspect_usage(stderr);
        return 2;
    }
    const char *path = argv[optind];
    char err[LOADER_ERR_LEN];
    loader_model *model;
    if ((open_model ? open_model : loader_model_open)(path, &model, err, sizeof err) != 0) {
        report_error("inspect", err);
        return 1;
    }
    size_t count = loader_model_tensor_count(model);
    dtype_total *totals = calloc(count ? count : 1, sizeof *totals);
    int rc = 1;
    if (!totals) {
        fprintf(stderr, "hubfs inspect: out of memory\n");
    } else {
        size_t kinds = sum_by_dtype(model, totals);
        rc = json ? print_inspect_json(model) : print_inspect_text(path, model, totals, kinds);
    }
    free(totals);
    loader_model_close(model);
    return rc;
}

/* ---- load ---- */

static bool parse_uint(const char *text, unsigned *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || v > 1000000) return false;
    *out = (unsigned)v;
    return true;
}

/* The first of the launcher variables that is set: torchrun, Open MPI, Slurm. */
static const char *launcher_env(const char *torchrun, const char *openmpi, const char *slurm)
{
    const char *names[] = {torchrun, openmpi, slurm};
    for (size_t i = 0; i < 3; i++) {
        const char *v = getenv(names[i]);
        if (v && *v) return v;
    }
    return NULL;
}

static int env_default(unsigned *out, unsigned fallback, const char *what, const char *a,
                       const char *b, const char *c)
{
    const char *v = launcher_env(a, b, c);
    *out = fallback;
    if (v && !parse_uint(v, out)) {
        fprintf(stderr, "hubfs load: the %s from the environment ('%s') is not a number\n", what, v);
        return -1;
    }
    return 0;
}

typedef struct progress_bar {
    int last_permille;
} progress_bar;

static void show_progress(void *ctx, uint64_t done, uint64_t total)
{
    progress_bar *bar = ctx;
    int permille = total ? (int)(done * 1000 / total) : 1000;
    if (permille == bar->last_permille) return;
    bar->last_permille = permille;
    char cells[41];
    int filled = permille * 40 / 1000;
    for (int i = 0; i < 40; i++) cells[i] = i < filled ? '#' : '.';
    cells[40] = '\0';
    fprintf(stderr, "\r[%s] %5.1f%% %8.1f / %.1f MB", cells, permille / 10.0, (double)done / 1e6,
            (double)total / 1e6);
    if (done == total) fprintf(stderr, "\n");
}

typedef struct load_args {
    const char *path, *device, *plan, *save;
    unsigned tp, rank, local_rank, threads, chunk_mib, chunk_bytes;
    bool verify;
} load_args;

static int parse_load_args(int argc, char **argv, load_args *a)
{
    enum { OPT_VERIFY = 1000, OPT_THREADS, OPT_CHUNK, OPT_CHUNK_BYTES };
    static const struct option options[] = {
        {"tp", required_argument, NULL, 't'},       {"rank", required_argument, NULL, 'r'},
        {"device", required_argument, NULL, 'd'},   {"plan", required_argument, NULL, 'p'},
        {"save", required_argument, NULL, 's'},     {"threads", required_argument, NULL, OPT_THREADS},
        {"chunk-mib", required_argument, NULL, OPT_CHUNK},
        {"verify-against-host", no_argument, NULL, OPT_VERIFY},
        {"chunk-bytes", required_argument, NULL, OPT_CHUNK_BYTES}, /* hidden: tests */
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0}};
    memset(a, 0, sizeof *a);
    if (env_default(&a->tp, 1, "world size", "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS") ||
        env_default(&a->rank, 0, "rank", "RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID") ||
        env_default(&a->local_rank, 0, "local rank", "LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                    "SLURM_LOCALID"))
        return 2;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case 't': ok = parse_uint(optarg, &a->tp) && a->tp > 0; break;
        case 'r': ok = parse_uint(optarg, &a->rank); break;
        case 'd': a->device = optarg; break;
        case 'p': a->plan = optarg; break;
        case 's': a->save = optarg; break;
        case OPT_THREADS: ok = parse_uint(optarg, &a->threads) && a->threads > 0; break;
        case OPT_CHUNK: ok = parse_uint(optarg, &a->chunk_mib) && a->chunk_mib > 0 && a->chunk_mib <= 1024; break;
        case OPT_CHUNK_BYTES: ok = parse_uint(optarg, &a->chunk_bytes) && a->chunk_bytes >= 64; break;
        case OPT_VERIFY: a->verify = true; break;
        case 'h': load_usage(stdout); return 0;
        default: load_usage(stderr); return 2;
        }
        if (!ok) {
            fprintf(stderr, "hubfs load: bad value '%s' for %s\n", optarg, argv[optind - 1]);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "hubfs load: expected one PATH\n\n");
        load_usage(stderr);
        return 2;
    }
    a->path = argv[optind];
    return -1; /* go on */
}

/* Loads the same rank into host memory and compares every byte with `rank`. */
static int verify_against_host(const loader_model *model, loader_options options,
                               const loader_rank *rank)
{
    char err[LOADER_ERR_LEN];
    loader_rank *host;
    options.device = "cpu";
    options.progress = NULL;
    if (loader_load(model, &options, &host, err, sizeof err) != 0) {
        fprintf(stderr, "hubfs load: verify: host load failed: %s\n", err);
        return 1;
    }
    uint8_t *a = malloc(VERIFY_CHUNK), *b = malloc(VERIFY_CHUNK);
    int rc = a && b ? 0 : 1;
    for (size_t i = 0; rc == 0 && i < loader_rank_tensor_count(rank); i++) {
        loader_tensor_info t, h;
        loader_rank_tensor(rank, i, &t);
        loader_rank_tensor(host, i, &h);
        for (uint64_t done = 0; rc == 0 && done < t.nbytes; done += VERIFY_CHUNK) {
            size_t n = t.nbytes - done < VERIFY_CHUNK ? (size_t)(t.nbytes - done) : VERIFY_CHUNK;
            if (loader_rank_read(rank, t.offset + done, a, n, err, sizeof err) != 0 ||
                loader_rank_read(host, h.offset + done, b, n, err, sizeof err) != 0) {
                fprintf(stderr, "hubfs load: verify: %s\n", err);
                rc = 1;
            } else if (memcmp(a, b, n) != 0) {
                char *name = terminal_safe(t.name);
                fprintf(stderr, "hubfs load: verify: tensor '%s' differs from the host load\n",
                        name ? name : "?");
                free(name);
                rc = 1;
            }
        }
    }
    if (rc == 0)
        printf("verify: %zu tensors on %s are byte-identical to a host load\n",
               loader_rank_tensor_count(rank), loader_rank_device(rank));
    free(a);
    free(b);
    loader_rank_free(host);
    return rc;
}

static void print_summary(const load_args *a, const loader_rank *rank)
{
    uint64_t bytes = loader_rank_bytes(rank);
    double seconds = loader_rank_seconds(rank);
    printf("loaded rank %u of %u to %s: %zu tensors, %" PRIu64 " bytes (%.1f MB) in %.3f s, "
           "%.2f GB/s; read %.1f MB from the files\n", a->rank, a->tp, loader_rank_device(rank),
           loader_rank_tensor_count(rank), bytes, (double)bytes / 1e6, seconds,
           seconds > 0 ? (double)bytes / seconds / 1e9 : 0.0,
           (double)loader_rank_bytes_read(rank) / 1e6);
}

/* `--device cuda`: the local rank's GPU, or the only GPU the process sees — a launcher that
 * gives each rank one GPU through CUDA_VISIBLE_DEVICES leaves every rank a cuda:0. */
static int resolve_cuda(unsigned local_rank, char *device, size_t len)
{
    int visible = target_cuda_visible_devices();
    if (visible > 1 && local_rank >= (unsigned)visible) {
        fprintf(stderr, "hubfs load: --device cuda: local rank %u has no GPU: this process sees "
                "%d (cuda:0..%d); pass --device cuda:K or give each rank its GPU with "
                "CUDA_VISIBLE_DEVICES\n", local_rank, visible, visible - 1);
        return -1;
    }
    snprintf(device, len, "cuda:%u", visible == 1 ? 0 : local_rank);
    return 0;
}

int loader_cli_load(int argc, char **argv, loader_cli_opener open_model)
{
    load_args a;
    int rc = parse_load_args(argc, argv, &a);
    if (rc >= 0) return rc;
    char device[32], err[LOADER_ERR_LEN];
    if (a.device && strcmp(a.device, "cuda") == 0) {
        if (resolve_cuda(a.local_rank, device, sizeof device) != 0) return 1;
        a.device = device;
    }
    progress_bar bar = {-1};
    loader_options options = {.tp_size = a.tp, .rank = a.rank, .device = a.device ? a.device : "cpu",
                              .plan_path = a.plan, .reader_threads = a.threads,
                              .chunk_bytes = a.chunk_bytes ? a.chunk_bytes : (size_t)a.chunk_mib << 20};
    if (isatty(STDERR_FILENO)) {
        options.progress = show_progress;
        options.progress_ctx = &bar;
    }
    loader_model *model;
    loader_rank *rank = NULL;
    if ((open_model ? open_model : loader_model_open)(a.path, &model, err, sizeof err) != 0) {
        report_error("load", err);
        return 1;
    }
    rc = 0;
    if (loader_load(model, &options, &rank, err, sizeof err) != 0) {
        report_error("load", err);
        rc = 1;
    } else {
        print_summary(&a, rank);
        if (a.verify) rc = verify_against_host(model, options, rank);
        if (rc == 0 && a.save) {
            if (loader_rank_save(rank, a.save, err, sizeof err) != 0) {
                report_error("load", err);
                rc = 1;
            } else {
                printf("saved %s\n", a.save);
            }
        }
    }
    loader_rank_free(rank);
    loader_model_close(model);
    return rc;
}
