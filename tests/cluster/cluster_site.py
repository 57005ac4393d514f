"""Fixtures and helpers of the cluster suite: a Hub emulator serving a model larger than one
cache slice and a gated repo, and scripts/cluster-cache.sh running in front of it."""
import json
import os
import shutil
import tempfile

import pytest

import hubemu
from nginx import NginxProcess, free_port
from files import sha256_of  # noqa: E402

SCRIPT = os.path.join(hubemu.SOURCE_DIR, "scripts", "cluster-cache.sh")
MODEL_REPO = "site-org/cluster-llama"
GATED_REPO = "site-org/gated-llama"
PRIVATE_REPO = "site-org/private-llama"
TOKEN = "hf_clusterReaderToken0123456789abcdef"     # granted the gated repo
OTHER_TOKEN = "hf_clusterOtherToken0123456789abcdef"  # valid, not granted
BIG_FILE = "data.bin"     # LFS, 24 MiB: three cache slices; no tensor order to prefetch along


class Site:
    """hub (the Emulator), model (the directory both repos were imported from), commits."""

    def __init__(self, hub, model, commits):
        self.hub, self.model, self.commits = hub, model, commits

    def files(self):
        return sorted(os.listdir(self.model))

    def lfs_files(self):
        return [name for name in self.files() if name.endswith((".safetensors", ".bin"))]

    def size(self, name):
        return os.path.getsize(os.path.join(self.model, name))

    def cdn_log(self):
        return [entry for entry in self.hub.log() if entry["origin"] == "cdn"]


def _grant_only(root, repo_id, tokens):
    path = os.path.join(root, "models", repo_id, "repo.json")
    with open(path) as f:
        info = json.load(f)
    info["granted_tokens"] = list(tokens)
    with open(path, "w") as f:
        json.dump(info, f)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    work = tmp_path_factory.mktemp("cluster-site")
    model = str(work / "model")
    shutil.copytree(hubemu.cached_model(preset="small", shards=3, seed=3), model)   # 52 MB
    with open(os.path.join(model, BIG_FILE), "wb") as f:
        f.write(os.urandom(24 << 20))
    root = str(work / "hub-root")
    commits = {MODEL_REPO: hubemu.import_repo(root, MODEL_REPO, model),
               GATED_REPO: hubemu.import_repo(root, GATED_REPO, model, gated=True),
               PRIVATE_REPO: hubemu.import_repo(root, PRIVATE_REPO, model, private=True)}
    _grant_only(root, GATED_REPO, [TOKEN])
    with hubemu.Emulator(root, tokens=[TOKEN, OTHER_TOKEN]) as hub:
        yield Site(hub, model, commits)


class ClusterCache:
    """scripts/cluster-cache.sh PORT DIR UPSTREAM: url, directory, kill() (a crash), stop()."""

    def __init__(self, directory, upstream, extra_args=()):
        self.directory, self.upstream = directory, upstream
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        os.makedirs(directory, exist_ok=True)
        # Names in redirects are looked up by nginx's resolver; the emulator's CDN is localhost,
        # which the configuration never looks up, so no name server is needed here.
        self.nginx = NginxProcess([SCRIPT, str(self.port), directory, upstream, "--resolver", "127.0.0.1",
                                   *extra_args],
                                  pid_file=os.path.join(directory, "run", "nginx.pid"),
                                  stderr_path=os.path.join(directory, "stderr.txt"))

    def start(self):
        self.nginx.start()
        return self

    def kill(self):
        self.nginx.kill()

    def stop(self):
        self.nginx.stop()

    def files_containing(self, needle):
        """Paths under the cache directory (caches, logs, configuration) whose bytes hold needle."""
        found = []
        for dirpath, _, names in os.walk(self.directory):
            for name in names:
                path = os.path.join(dirpath, name)
                try:
                    with open(path, "rb") as f:
                        if needle.encode() in f.read():
                            found.append(path)
                except OSError:
                    pass             # a socket
        return found


@pytest.fixture
def cache(site):
    """A cluster cache with an empty cache directory, in front of the site's Hub."""
    directory = tempfile.mkdtemp(prefix="hubfs-cc-")
    running = ClusterCache(directory, site.hub.hub_url).start()
    try:
        yield running
    finally:
        running.stop()
        site.hub.reset()
        site.hub.clear_log()
        shutil.rmtree(directory, ignore_errors=True)
