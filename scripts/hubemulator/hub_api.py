"""The Hub origin: repo listings by author, repo info, tree, paths-info, refs, resolve (200 for git
files, 302 to the CDN for LFS files), auth (private, gated, unknown tokens) and the Hub's error
headers."""
import base64
import hashlib
import json
import os
import re
import time
import urllib.parse

from .admin import AdminRoutes
from .http_io import Answer, BaseHandler, error_answer, file_answer, json_answer
from .store import TYPE_PREFIXES, list_repo_ids, read_repo_json, repo_dir, valid_repo_id


def split_segments(raw_path):
    """'/a/b%2Fc/d' -> ['a', 'b%2Fc', 'd']: still encoded, so an encoded '/' stays inside its segment."""
    return raw_path.split("/")[1:]


def encode_cursor(offset):
    return base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


def decode_cursor(cursor):
    """The tree offset an opaque cursor stands for; None when it is not one of ours."""
    if not cursor:
        return 0
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", cursor):
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    return int(text) if text.isdigit() else None


class HubHandler(AdminRoutes, BaseHandler):
    origin = "hub"

    def scope_of(self, path):
        if path.startswith("/_emulator/"):
            return "admin"
        if path.startswith("/api/") and not path.startswith("/api/resolve-cache/"):
            return "api"
        return "resolve"

    # -- auth ------------------------------------------------------------------------------------
    def bearer(self):
        auth = self.headers.get("Authorization", "")
        return auth[7:].strip() if auth.lower().startswith("bearer ") else (auth.strip() or None)

    def auth_failure(self):
        """401 for a token the Hub does not know (only when --token was given)."""
        token = self.bearer()
        if token and self.state.tokens and token not in self.state.tokens:
            return error_answer(401, None, "Invalid credentials in Authorization header")
        return None

    def authenticated(self):
        token = self.bearer()
        return bool(token) and (not self.state.tokens or token in self.state.tokens)

    def open_repo(self, repo_type, repo_id, revision, for_content):
        """(info, sha, None) or (None, None, error answer)."""
        failure = self.auth_failure()
        if failure:
            return None, None, failure
        info = read_repo_json(self.state.root, repo_type, repo_id) if valid_repo_id(repo_id) else None
        if info is None or (info.get("private") and not self.authenticated()):
            status = 404 if self.authenticated() else 401
            return None, None, error_answer(status, "RepoNotFound", "Repository not found")
        if info.get("disabled"):
            return None, None, error_answer(403, None, "Access to this resource is disabled.")
        if for_content and info.get("gated") and not self.gated_access(info):
            url = f"{self.state.hub_url}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
            msg = (f"Access to {repo_type} {repo_id} is restricted and you are not in the authorized "
                   f"list. Visit {url} to ask for access.")
            return None, None, error_answer(403, "GatedRepo", msg)
        sha = self.state.resolve_revision(repo_type, repo_id, info, revision)
        if sha is None:
            return None, None, error_answer(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return info, sha, None

    def gated_access(self, info):
        if not self.authenticated():
            return False
        granted = info.get("granted_tokens")
        return granted is None or self.bearer() in granted

    # -- routing ---------------------------------------------------------------------------------
    def route(self, method, raw_path, query, body):
        seg = split_segments(raw_path)
        params = urllib.parse.parse_qs(query, keep_blank_values=True)
        if seg[:1] == ["_emulator"]:
            return self.admin(method, seg[1:], body)
        if seg[:1] == ["api"] and len(seg) >= 2 and seg[1] == "resolve-cache":
            return self.resolve_cache(method, seg[2:])
        if seg[:1] == ["api"] and len(seg) == 2 and seg[1] in TYPE_PREFIXES and method == "GET":
            return self.list_repos(TYPE_PREFIXES[seg[1]], params)
        if seg[:1] == ["api"] and len(seg) >= 4 and seg[1] in TYPE_PREFIXES:
            return self.api(method, TYPE_PREFIXES[seg[1]], seg[2] + "/" + seg[3], seg[4:], params, body)
        repo_type = "model"
        if seg[:1] in (["datasets"], ["spaces"]):
            repo_type, seg = TYPE_PREFIXES[seg[0]], seg[1:]
        if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            revision, rest = urllib.parse.unquote(seg[3]), seg[4:]
            if revision == "refs" and len(rest) >= 3 and rest[0] in ("pr", "convert"):
                revision, rest = "/".join(["refs"] + rest[:2]), rest[2:]  # refs/pr/1 sent unencoded
            path = urllib.parse.unquote("/".join(rest))
            return self.resolve(method, repo_type, seg[0] + "/" + seg[1], revision, path)
        return error_answer(404, None, f"Not found: {raw_path}")

    def api(self, method, repo_type, repo_id, rest, params, body):
        repo_id = urllib.parse.unquote(repo_id)
        if not rest and method == "GET":
            return self.repo_info(repo_type, repo_id, "main", params)
        if len(rest) == 2 and rest[0] == "revision" and method == "GET":
            return self.repo_info(repo_type, repo_id, urllib.parse.unquote(rest[1]), params)
        if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
            sub = urllib.parse.unquote("/".join(rest[2:])).strip("/")
            return self.tree(repo_type, repo_id, urllib.parse.unquote(rest[1]), sub, params)
        if len(rest) == 2 and rest[0] == "paths-info" and method == "POST":
            return self.paths_info(repo_type, repo_id, urllib.parse.unquote(rest[1]), body)
        if rest == ["refs"] and method == "GET":
            return self.refs(repo_type, repo_id)
        return error_answer(404, None, "Not found")

    # -- API calls -------------------------------------------------------------------------------
    def repo_info(self, repo_type, repo_id, revision, params):
        info, sha, err = self.open_repo(repo_type, repo_id, revision, for_content=False)
        if err:
            return err
        meta = self.state.commit_meta(repo_type, repo_id, sha)
        blobs = params.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for e in meta["files"]:
            s = {"rfilename": e["path"]}
            if blobs:
                s.update({"blobId": e["oid"], "size": e["size"]})
                if e["lfs"]:
                    s["lfs"] = {"sha256": e["sha256"], "size": e["size"], "pointerSize": e["pointer_size"]}
            siblings.append(s)
        created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(meta.get("created", 0)))
        result = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id,
            "author": repo_id.split("/")[0], "sha": sha, "lastModified": created,
            "createdAt": created, "private": bool(info.get("private")),
            "gated": "auto" if info.get("gated") else False, "disabled": bool(info.get("disabled")),
            "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
        }
        if repo_type == "model":
            result["modelId"] = repo_id
            result["library_name"] = "transformers"
        if blobs:
            result["usedStorage"] = sum(e["size"] for e in meta["files"])
        return json_answer(200, result)

    def list_repos(self, repo_type, params):
        """GET /api/{models,datasets,spaces}?author=ORG: the repos the caller may see (private
        ones only with a valid token), sorted by id, paged like the tree. `limit` makes pages no
        larger; `search` keeps ids containing it."""
        failure = self.auth_failure()
        if failure:
            return failure
        author = params.get("author", [None])[0]
        search = params.get("search", [""])[0].lower()
        items = []
        for repo_id in list_repo_ids(self.state.root, repo_type, author):
            info = read_repo_json(self.state.root, repo_type, repo_id)
            if info is None or (info.get("private") and not self.authenticated()) or search not in repo_id.lower():
                continue
            items.append(self.listed_repo(repo_type, repo_id, info))
        limit = params.get("limit", [""])[0]
        page_size = int(self.state.knob("page_size"))
        if limit.isdigit() and int(limit) > 0:
            page_size = min(page_size, int(limit))
        return self.paged(items, params, page_size)

    def listed_repo(self, repo_type, repo_id, info):
        """One repo as the Hub's listings show it by default (no siblings)."""
        sha = info["branches"].get("main")
        meta = self.state.commit_meta(repo_type, repo_id, sha) if sha else None
        created = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime((meta or {}).get("created", 0)))
        item = {"_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "id": repo_id,
                "private": bool(info.get("private")), "likes": 0, "downloads": 0, "tags": [],
                "createdAt": created}
        if repo_type == "model":
            item.update(modelId=repo_id, library_name="transformers")
        else:
            item.update(author=repo_id.split("/")[0], lastModified=created, sha=sha,
                        gated="auto" if info.get("gated") else False, disabled=bool(info.get("disabled")))
        return item

    def paged(self, items, params, page_size):
        """One page of items from the cursor on, with a Link to the next page (absolute, as the
        Hub's), or the 400 of a cursor that is not ours."""
        offset = decode_cursor(params.get("cursor", [""])[0])
        if offset is None:
            return error_answer(400, None, "Invalid cursor")
        headers = {}
        if offset + page_size < len(items):
            q = {k: v[0] for k, v in params.items() if k != "cursor"}
            q["cursor"] = encode_cursor(offset + page_size)
            raw_path = self.path.partition("?")[0]
            headers["Link"] = f'<{self.state.hub_url}{raw_path}?{urllib.parse.urlencode(q)}>; rel="next"'
        return json_answer(200, items[offset:offset + page_size], headers)

    def tree_items(self, repo_type, repo_id, sha, meta, expand):
        """Every file and directory of the commit, sorted by path."""
        items = {}
        commit = None
        if expand:
            commit = {"id": sha, "title": "Upload", "date": time.strftime(
                "%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(meta.get("created", 0)))}
        for e in meta["files"]:
            item = {"type": "file", "oid": e["oid"], "size": e["size"], "path": e["path"]}
            if e["lfs"]:
                item["lfs"] = {"oid": e["sha256"], "size": e["size"], "pointerSize": e["pointer_size"]}
            if commit:
                item["lastCommit"] = commit
            items[e["path"]] = item
            parts = e["path"].split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in items:
                    oid = hashlib.sha1(f"tree {sha} {d}".encode()).hexdigest()
                    items[d] = {"type": "directory", "oid": oid, "size": 0, "path": d}
                    if commit:
                        items[d]["lastCommit"] = commit
        return items

    def tree(self, repo_type, repo_id, revision, sub, params):
        info, sha, err = self.open_repo(repo_type, repo_id, revision, for_content=False)
        if err:
            return err
        meta = self.state.commit_meta(repo_type, repo_id, sha)
        flag = lambda name: params.get(name, ["false"])[0].lower() in ("1", "true")
        items = self.tree_items(repo_type, repo_id, sha, meta, flag("expand"))
        if sub and (sub not in items or items[sub]["type"] != "directory"):
            return error_answer(404, "EntryNotFound", f"{sub} does not exist on \"{revision}\"")
        prefix = sub + "/" if sub else ""
        recursive = flag("recursive")
        selected = [items[p] for p in sorted(items)
                    if p.startswith(prefix) and (recursive or "/" not in p[len(prefix):])]
        return self.paged(selected, params, max(1, int(self.state.knob("page_size"))))

    def paths_info(self, repo_type, repo_id, revision, body):
        info, sha, err = self.open_repo(repo_type, repo_id, revision, for_content=False)
        if err:
            return err
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            try:
                form = json.loads(body or b"{}")
            except ValueError:
                return error_answer(400, None, "Invalid JSON body")
            paths = form.get("paths", [])
            expand = bool(form.get("expand"))
        else:
            form = urllib.parse.parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = form.get("expand", ["false"])[0].lower() in ("1", "true")
        meta = self.state.commit_meta(repo_type, repo_id, sha)
        items = self.tree_items(repo_type, repo_id, sha, meta, expand)
        wanted = []
        for p in paths:
            p = str(p).strip("/")
            if p in items and items[p] not in wanted:
                wanted.append(items[p])
        return json_answer(200, wanted)

    def refs(self, repo_type, repo_id):
        info, _, err = self.open_repo(repo_type, repo_id, "main", for_content=False)
        if err and err.headers.get("X-Error-Code") != "RevisionNotFound":
            return err
        info = read_repo_json(self.state.root, repo_type, repo_id)
        ref = lambda prefix, d: [{"name": n, "ref": f"refs/{prefix}/{n}", "targetCommit": s}
                                 for n, s in sorted(d.items())]
        return json_answer(200, {"branches": ref("heads", info["branches"]),
                                 "tags": ref("tags", info.get("tags", {})), "converts": []})

    # -- resolve ---------------------------------------------------------------------------------
    def resolve(self, method, repo_type, repo_id, revision, path):
        info, sha, err = self.open_repo(repo_type, repo_id, revision, for_content=True)
        if err:
            return err
        entry = self.state.commit_meta(repo_type, repo_id, sha)["by_path"].get(path)
        if entry is None:  # the commit comes along, as on the Hub, so clients can cache the miss
            missing = error_answer(404, "EntryNotFound", "Entry not found")
            missing.headers["X-Repo-Commit"] = sha
            return missing
        common = {"X-Repo-Commit": sha, "Vary": "Origin, Accept-Encoding"}
        if entry["lfs"]:
            headers = dict(common)
            headers.update({
                "Location": self.state.signed_cdn_url(repo_type, repo_id, sha, path),
                "ETag": f'"{entry["oid"]}"',
                "X-Linked-Etag": f'"{entry["sha256"]}"',
                "X-Linked-Size": str(entry["size"]),
                "Content-Type": "text/plain; charset=utf-8",
            })
            return Answer(302, headers, f"Found. Redirecting to {headers['Location']}".encode())
        if self.state.knob("resolve_cache_redirect"):
            location = (f"/api/resolve-cache/{repo_type}s/{repo_id}/{sha}/"
                        f"{urllib.parse.quote(path, safe='/')}")
            return Answer(307, dict(common, Location=location), b"")
        return self.small_file(method, repo_type, repo_id, sha, entry, common)

    def small_file(self, method, repo_type, repo_id, sha, entry, headers):
        headers = dict(headers, ETag=f'"{entry["oid"]}"')
        path = os.path.join(repo_dir(self.state.root, repo_type, repo_id), "commits", sha, entry["path"])
        return file_answer(self.state, path, entry["size"], self.headers.get("Range"), method, headers, "hub")

    def resolve_cache(self, method, seg):
        if len(seg) < 5 or seg[0] not in TYPE_PREFIXES or method not in ("GET", "HEAD"):
            return error_answer(404, None, "Not found")
        repo_type, repo_id, sha = TYPE_PREFIXES[seg[0]], seg[1] + "/" + seg[2], seg[3]
        path = urllib.parse.unquote("/".join(seg[4:]))
        info, sha, err = self.open_repo(repo_type, repo_id, sha, for_content=True)
        if err:
            return err
        entry = self.state.commit_meta(repo_type, repo_id, sha)["by_path"].get(path)
        if entry is None or entry["lfs"]:
            return error_answer(404, "EntryNotFound", "Entry not found")
        return self.small_file(method, repo_type, repo_id, sha, entry, {"X-Repo-Commit": sha})
