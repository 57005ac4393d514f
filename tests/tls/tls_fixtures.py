"""Fixtures and helpers of the TLS suite: a site (nginx with TLS + HTTP/2 in front of the Hub
emulator, with a CA made by the test), a second CA that vouches for nothing here, and mount
environments in which every CA and proxy variable is spelled out (so nothing leaks in from the
caller's)."""
import os
import shutil
import tempfile

import pytest

import hubemu
from tls_site import TestCA, TlsSite
from files import sha256_of  # noqa: E402

TOKEN = "hf_tlsTestToken0123456789abcdefXYZ"
PUBLIC_REPO = "tls-org/tiny-llama"
PRIVATE_REPO = "tls-org/private-llama"
SHARD = "model-00002-of-00003.safetensors"   # LFS: the Hub redirects it to the CDN
CONFIG = "config.json"                       # a git file: the Hub serves it itself

CA_VARIABLES = ("CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy",
                   "ALL_PROXY", "no_proxy", "NO_PROXY")


def mount_env(**overrides):
    """Environment additions for a Mount: no CA bundle, no proxy (an empty value is unset for
    hubfs and curl alike), fast retries; then the overrides."""
    env = {name: "" for name in CA_VARIABLES + PROXY_VARIABLES}
    env.update(HUBFS_MAX_RETRIES="3", HUBFS_BACKOFF_MS="500")
    env.update(overrides)
    return env


class Tls:
    """What the tests need: site (TlsSite), ca (trusted by the site's certificates), other_ca,
    model (the directory both repos were imported from), work (a scratch directory)."""

    def __init__(self, work, site, ca, other_ca, model):
        self.work, self.site, self.ca, self.other_ca, self.model = work, site, ca, other_ca, model

    def assert_same_bytes(self, mount, repo, paths=(CONFIG, SHARD)):
        for path in paths:
            assert sha256_of(os.path.join(mount.path, repo, path)) == sha256_of(os.path.join(self.model, path)), \
                f"{repo}/{path} read through hubfs differs from its source"


@pytest.fixture(scope="session")
def tls():
    work = tempfile.mkdtemp(prefix="hubfs-tls-")
    try:
        model = hubemu.cached_model(preset="tiny", shards=3, seed=0)
        root = os.path.join(work, "hub-root")
        hubemu.import_repo(root, PUBLIC_REPO, model)
        hubemu.import_repo(root, PRIVATE_REPO, model, private=True)
        ca = TestCA(work, "site CA")
        other_ca = TestCA(work, "unrelated CA")
        with TlsSite(work, root, ca, tokens=[TOKEN]) as site:
            yield Tls(work, site, ca, other_ca, model)
    finally:
        shutil.rmtree(work, ignore_errors=True)
