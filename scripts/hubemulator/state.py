"""Everything the two origins share at run time: knobs, fault decisions (seeded RNG), the request
log, the commit metadata cache and CDN URL signing."""
import hashlib
import hmac
import json
import os
import random
import threading
import time
import urllib.parse

from .store import repo_dir

LOG_LIMIT = 200_000

DEFAULT_KNOBS = {
    "latency_ms": 0,            # delay before the first byte of every answer
    "bandwidth_bps": 0,         # per-response pacing of bodies (0 = unlimited)
    "error_rate": 0.0,          # fraction of requests answered 500/502/503 at random
    "error_scope": "all",       # all | api | resolve | cdn | data (resolve+cdn) | hub (api+resolve)
    "fail_next": [],            # deterministic faults, see README
    "rate_limit": None,         # {"api": N, "resolve": N, "window_s": 300}: 429 past N per window
    "reset_rate": 0.0,          # fraction of data bodies cut by a TCP reset
    "reset_after_bytes": None,  # where they are cut (None = half way)
    "truncate": 0.0,            # fraction of data bodies that stop short of Content-Length (FIN)
    "stall_ms": 0,              # pause mid-body of data responses
    "ignore_range": False,      # answer ranged GETs with 200 and the whole file
    "cdn_url_ttl_s": 3600,      # lifetime of signed CDN URLs
    "page_size": 1000,          # tree entries per page
    "resolve_cache_redirect": False,  # small files: relative 307 to /api/resolve-cache/...
    "seed": 0,                  # RNG seed of the random faults (setting it restarts the RNG)
}

NUMBER_KNOBS = ("latency_ms", "bandwidth_bps", "stall_ms", "cdn_url_ttl_s", "page_size")
RATE_KNOBS = ("error_rate", "reset_rate")
SCOPES = ("all", "api", "resolve", "cdn", "data", "hub")
FAULT_ACTIONS = ("drop", "reset", "truncate", "stall", "ignore_range", "trickle")


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_knob(name, value):
    """Raises ValueError naming the knob when the value cannot work."""
    def bad(why):
        raise ValueError(f"knob {name}: {why} (got {json.dumps(value)})")
    if name not in DEFAULT_KNOBS:
        raise ValueError(f"unknown knob {name!r}; known: {', '.join(DEFAULT_KNOBS)}")
    if name in NUMBER_KNOBS and not (_is_number(value) and value >= 0):
        bad("want a number >= 0")
    if name == "page_size" and value < 1:
        bad("want at least 1")
    if name in RATE_KNOBS and not (_is_number(value) and 0 <= value <= 1):
        bad("want a fraction in [0, 1]")
    if name == "truncate" and not (isinstance(value, bool) or (_is_number(value) and 0 <= value <= 1)):
        bad("want true/false or a fraction in [0, 1]")
    if name == "error_scope" and value not in SCOPES:
        bad(f"want one of {', '.join(SCOPES)}")
    if name == "reset_after_bytes" and value is not None and not (_is_number(value) and value >= 0):
        bad("want null or a number >= 0")
    if name in ("ignore_range", "resolve_cache_redirect") and not isinstance(value, bool):
        bad("want true or false")
    if name == "seed" and not isinstance(value, (int, str)):
        bad("want an integer")
    if name == "rate_limit" and value is not None and not (
            isinstance(value, dict) and all(_is_number(v) for v in value.values())):
        bad('want null or {"api": N, "resolve": N, "window_s": S}')
    if name == "fail_next":
        if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
            bad("want a list of rule objects")
        for rule in value:
            if rule.get("action") not in (None,) + FAULT_ACTIONS:
                bad(f"rule action must be one of {', '.join(FAULT_ACTIONS)}")
            if "action" not in rule and not isinstance(rule.get("status", 500), int):
                bad("rule status must be an integer")
            if rule.get("action") == "trickle" and not (_is_number(rule.get("bps", 1)) and rule.get("bps", 1) > 0):
                bad("a trickle rule's bps must be a number > 0")


class EmulatorState:
    def __init__(self, root, tokens, knobs, external_cdn, log_path, secret):
        self.root = os.path.abspath(root)
        self.tokens = set(tokens)
        self.lock = threading.Lock()
        for name, value in knobs.items():
            check_knob(name, value)
        self.initial_knobs = json.loads(json.dumps(knobs))
        self.knobs = json.loads(json.dumps(knobs))
        self.rng = random.Random(knobs["seed"])
        self.external_cdn = external_cdn.rstrip("/") if external_cdn else None
        self.secret = secret
        self.hub_url = self.cdn_url = None
        self.log = []
        self.log_file = open(log_path, "a", buffering=1) if log_path else None
        self.meta_cache = {}
        self.rate_windows = {}
        self.in_flight = 0

    # -- knobs ------------------------------------------------------------------------------
    def set_knobs(self, changes):
        """Merges validated knobs; a bad one changes nothing and raises ValueError."""
        if not isinstance(changes, dict):
            raise ValueError("knobs come as a JSON object")
        for name, value in changes.items():
            check_knob(name, value)
        with self.lock:
            self.knobs.update(json.loads(json.dumps(changes)))  # a private copy
            if "seed" in changes:
                self.rng = random.Random(changes["seed"])
            return self.snapshot_knobs()

    def reset_knobs(self):
        """Back to the values the server started with (fail_next rules included)."""
        with self.lock:
            self.knobs = json.loads(json.dumps(self.initial_knobs))
            self.rng = random.Random(self.knobs["seed"])
            self.rate_windows = {}

    def snapshot_knobs(self):
        return json.loads(json.dumps(self.knobs))

    def knob(self, name):
        with self.lock:
            return self.knobs[name]

    def chance(self, rate):
        if not rate:
            return False
        with self.lock:
            return self.rng.random() < float(rate)

    def take_fault_rule(self, origin, scope, method, path):
        """The first fail_next rule matching this request, its count consumed."""
        with self.lock:
            rules = self.knobs["fail_next"]
            for i, rule in enumerate(rules):
                if rule.get("match", "") not in path:
                    continue
                if rule.get("origin") not in (None, origin) or rule.get("method") not in (None, method):
                    continue
                if rule.get("scope") not in (None, scope):
                    continue
                count = int(rule.get("count", 1))
                if count <= 1:
                    rules.pop(i)
                else:
                    rule["count"] = count - 1
                return dict(rule)
        return None

    def random_error_status(self, scope):
        rate = self.knob("error_rate")
        wanted = self.knob("error_scope")
        groups = {"all": ("api", "resolve", "cdn"), "data": ("resolve", "cdn"), "hub": ("api", "resolve")}
        if scope not in groups.get(wanted, (wanted,)):
            return None
        if not self.chance(rate):
            return None
        with self.lock:
            return self.rng.choice((500, 502, 503))

    def rate_limited(self, scope):
        """Seconds until the window resets when this request is over the limit, else None."""
        limits = self.knob("rate_limit")
        if not limits or scope not in ("api", "resolve") or not limits.get(scope):
            return None
        window = float(limits.get("window_s", 300))
        now = time.time()
        with self.lock:
            start, count = self.rate_windows.get(scope, (now, 0))
            if now - start >= window:
                start, count = now, 0
            count += 1
            self.rate_windows[scope] = (start, count)
            if count > int(limits[scope]):
                return max(1, int(window - (now - start) + 0.999))
        return None

    # -- log ----------------------------------------------------------------------------------
    def record(self, entry):
        """Adds a request to the log (before its answer goes out; see finish)."""
        with self.lock:
            self.log.append(entry)
            if len(self.log) > LOG_LIMIT:  # long benchmarks: keep the most recent entries
                del self.log[:LOG_LIMIT // 10]

    def correct_bytes_sent(self, entry, sent):
        with self.lock:
            entry["bytes_sent"] = sent

    def begin_request(self):
        with self.lock:
            self.in_flight += 1

    def end_request(self):
        with self.lock:
            self.in_flight -= 1

    def drain(self, timeout_s):
        """At shutdown: waits for requests in progress, so their log lines get written."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            with self.lock:
                if self.in_flight == 0:
                    break
            time.sleep(0.01)
        with self.lock:
            if self.log_file:
                self.log_file.close()
                self.log_file = None

    def finish(self, entry, duration_ms):
        """The request is over: its duration is known and the --log file gets its line."""
        with self.lock:
            entry["duration_ms"] = duration_ms
            if self.log_file:
                self.log_file.write(json.dumps(entry) + "\n")

    # -- repos ---------------------------------------------------------------------------------
    def commit_meta(self, repo_type, repo_id, sha):
        key = (repo_type, repo_id, sha)
        with self.lock:
            meta = self.meta_cache.get(key)
        if meta is None:
            path = os.path.join(repo_dir(self.root, repo_type, repo_id), "commits", sha + ".hashes.json")
            try:
                with open(path) as f:
                    meta = json.load(f)
            except (OSError, ValueError):
                return None
            meta["by_path"] = {e["path"]: e for e in meta["files"]}
            with self.lock:
                self.meta_cache[key] = meta
        return meta

    def resolve_revision(self, repo_type, repo_id, info, revision):
        sha = info["branches"].get(revision) or info.get("tags", {}).get(revision)
        if sha is None and len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
            sha = revision
        if sha is None or self.commit_meta(repo_type, repo_id, sha) is None:
            return None
        return sha

    # -- CDN signing ------------------------------------------------------------------------------
    def signature(self, path, expires):
        return hmac.new(self.secret, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def signed_cdn_url(self, repo_type, repo_id, sha, file_path):
        rel = "/".join([repo_type + "s", repo_id, "commits", sha, file_path])
        url_path = "/" + urllib.parse.quote(rel, safe="/")
        ttl = int(self.knob("cdn_url_ttl_s"))
        expires = int(time.time()) + ttl
        query = urllib.parse.urlencode({"Expires": expires, "X-Amz-Expires": ttl,
                                        "Signature": self.signature(url_path, expires)})
        base = self.external_cdn or self.cdn_url
        return f"{base}{url_path}?{query}"

