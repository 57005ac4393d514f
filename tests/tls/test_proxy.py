"""Proxies as curl and huggingface_hub read them: https:// goes through a CONNECT tunnel (so the
proxy relays TLS it cannot read, and the token never crosses it in clear), NO_PROXY sends the
hosts it lists direct, lowercase variables win over uppercase ones, ALL_PROXY is the fallback,
and HTTP_PROXY counts in uppercase too (as in Python; libcurl alone reads only http_proxy)."""
import urllib.parse

import pytest

import hubemu
from forward_proxy import ForwardProxy
from mount import Mount
from tls_fixtures import CONFIG, PRIVATE_REPO, PUBLIC_REPO, SHARD, TOKEN, mount_env
from tls_site import free_port


def dead_proxy_url():
    return f"http://127.0.0.1:{free_port()}"   # nothing listens there: using it would fail


def host_port(url):
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def token_pieces():
    return [TOKEN.encode(), TOKEN[3:].encode(), TOKEN[-16:].encode(), b"Bearer"]


def test_https_tunnels_and_the_token_stays_inside_tls(tls):
    site = tls.site
    site.emulator.clear_log()
    mark = site.logs.mark()
    with ForwardProxy() as proxy:
        env = mount_env(HTTPS_PROXY=proxy.url, CURL_CA_BUNDLE=tls.ca.pem, HF_TOKEN=TOKEN)
        with Mount(site.hub_url, env=env) as m:
            tls.assert_same_bytes(m, PRIVATE_REPO)
        heads, seen = proxy.heads(), proxy.seen_bytes()
    assert heads, "nothing went through the proxy"
    assert {h.method for h in heads} == {"CONNECT"}, heads
    assert {h.target for h in heads} == {host_port(site.hub_url), host_port(site.cdn_url)}, heads
    assert all("authorization" not in h.header_names() for h in heads), [h.headers for h in heads]
    for piece in token_pieces():
        assert piece not in seen, f"{piece!r} crossed the proxy in clear"
    # the token did reach the Hub (inside the tunnel), and only the Hub
    log = site.emulator.log()
    assert any(e["origin"] == "hub" and e["authorization"] for e in log), log
    assert any(e["origin"] == "cdn" for e in log) and not any(e["origin"] == "cdn" and e["authorization"] for e in log)
    requests = site.logs.requests(since=mark)
    assert requests and all(r["protocol"] == "HTTP/2.0" for r in requests), requests


def test_no_proxy_hosts_go_direct(tls):
    site = tls.site
    with ForwardProxy() as proxy:
        env = mount_env(HTTPS_PROXY=proxy.url, NO_PROXY="127.0.0.1", CURL_CA_BUNDLE=tls.ca.pem)
        with Mount(site.hub_url, env=env) as m:
            tls.assert_same_bytes(m, PUBLIC_REPO)
        heads = proxy.heads()
    # the Hub (127.0.0.1) is listed: direct; the CDN (localhost) is not: tunnelled
    assert heads and {(h.method, h.target) for h in heads} == {("CONNECT", host_port(site.cdn_url))}, heads


@pytest.mark.parametrize("variables", ["https_proxy over HTTPS_PROXY", "ALL_PROXY"])
def test_which_variable_names_the_https_proxy(tls, variables):
    with ForwardProxy() as proxy:
        chosen = {"https_proxy over HTTPS_PROXY": {"https_proxy": proxy.url, "HTTPS_PROXY": dead_proxy_url()},
                  "ALL_PROXY": {"ALL_PROXY": proxy.url, "HTTP_PROXY": dead_proxy_url()}}[variables]
        with Mount(tls.site.hub_url, env=mount_env(CURL_CA_BUNDLE=tls.ca.pem, **chosen)) as m:
            tls.assert_same_bytes(m, PUBLIC_REPO)
        targets = {h.target for h in proxy.heads()}
    assert targets == {host_port(tls.site.hub_url), host_port(tls.site.cdn_url)}


@pytest.fixture
def plain_hub(tls):
    """The same store served by the emulator alone, over plain http://."""
    with hubemu.Emulator(tls.site.root, tokens=[]) as emulator:
        yield emulator


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy"])
def test_plain_http_goes_through_the_http_proxy(tls, plain_hub, variable):
    with ForwardProxy() as proxy:
        with Mount(plain_hub.hub_url, env=mount_env(**{variable: proxy.url})) as m:
            tls.assert_same_bytes(m, PUBLIC_REPO)
        heads = proxy.heads()
    hub, cdn = host_port(plain_hub.hub_url), host_port(plain_hub.cdn_url)
    assert heads and {h.method for h in heads} <= {"GET", "HEAD"}, heads   # no tunnel for http://
    assert any(h.target.startswith(f"http://{hub}/") and h.target.endswith(CONFIG) for h in heads), heads
    assert any(h.target.startswith(f"http://{cdn}/") and SHARD in h.target for h in heads), heads
