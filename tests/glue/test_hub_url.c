/* hf:// URLs split as huggingface_hub's HfFileSystem reads them: repo type, ORG/NAME, an
 * optional revision (percent-decoded; refs/pr/N unencoded), a path; malformed ones refused
 * with a message naming the URL. */
#include "check.h"
#include "hub_url.h"

static void check_url(const char *text, hub_repo_type type, const char *id, const char *revision,
                      const char *path, const char *repo_text)
{
    hub_url u;
    char err[512] = "";
    int rc = hub_url_parse(text, &u, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (rc != 0) {
        fprintf(stderr, "  %s: %s\n", text, err);
        return;
    }
    CHECK_EQ_INT(u.type, type);
    CHECK(strcmp(u.repo_id, id) == 0);
    CHECK(strcmp(u.revision, revision) == 0);
    CHECK(strcmp(u.path, path) == 0);
    CHECK(strcmp(u.repo_text, repo_text) == 0);
    hub_url_clear(&u);
}

static void check_refused(const char *text, const char *fragment)
{
    hub_url u;
    char err[512] = "";
    CHECK_EQ_INT(hub_url_parse(text, &u, err, sizeof err), -1);
    CHECK_STR_CONTAINS(err, fragment);
    CHECK_STR_CONTAINS(err, text);
}

int main(void)
{
    check_url("hf://org/name", HUB_REPO_MODEL, "org/name", "main", "", "hf://org/name");
    check_url("hf://org/name/", HUB_REPO_MODEL, "org/name", "main", "", "hf://org/name");
    check_url("hf://org/name@v1.0", HUB_REPO_MODEL, "org/name", "v1.0", "", "hf://org/name@v1.0");
    check_url("hf://org/name@v1.0/sub/model.safetensors", HUB_REPO_MODEL, "org/name", "v1.0",
              "sub/model.safetensors", "hf://org/name@v1.0");
    check_url("hf://datasets/org/data@refs%2Fpr%2F3/x.safetensors", HUB_REPO_DATASET, "org/data",
              "refs/pr/3", "x.safetensors", "hf://datasets/org/data@refs%2Fpr%2F3");
    check_url("hf://spaces/org/app", HUB_REPO_SPACE, "org/app", "main", "", "hf://spaces/org/app");
    /* The Hub's special refs need no encoding, as in HfFileSystem. */
    check_url("hf://org/name@refs/pr/12/model.safetensors", HUB_REPO_MODEL, "org/name", "refs/pr/12",
              "model.safetensors", "hf://org/name@refs/pr/12");
    check_url("hf://org/name@refs/convert/parquet", HUB_REPO_MODEL, "org/name",
              "refs/convert/parquet", "", "hf://org/name@refs/convert/parquet");
    check_url("hf://org/name@feature%2Fx//dir//", HUB_REPO_MODEL, "org/name", "feature/x", "dir",
              "hf://org/name@feature%2Fx");

    check_refused("/local/path", "not an hf:// URL");
    check_refused("hf://", "no ORG/NAME");
    check_refused("hf://org", "no ORG/NAME");
    check_refused("hf://org/", "no NAME");
    check_refused("hf:///name", "no ORG/NAME");
    check_refused("hf://org/na me", "not a repository id");
    check_refused("hf://org/../x", "not a repository id");
    check_refused("hf://org/name@", "bad REVISION");
    check_refused("hf://org/name@%zz", "bad REVISION");
    check_refused("hf://org/name@%0a", "bad REVISION");
    check_refused("hf://org/name@v1/a/../b", "PATH has");
    check_refused("hf://org/name/a//b", "PATH has");
    return check_finish("glue hub_url");
}
