"""The repo store: ROOT/{models,datasets,spaces}/ORG/NAME/repo.json holds flags, branches and tags;
commits/<sha>/ holds a commit's files and commits/<sha>.hashes.json their sizes and hashes,
computed once at import so serving multi-GB repos never re-hashes."""
import hashlib
import json
import os
import shutil
import threading
import time

LFS_THRESHOLD = 10 * 1024 * 1024
LFS_SUFFIXES = (".safetensors", ".bin")
REPO_TYPES = ("model", "dataset", "space")
TYPE_PREFIXES = {"models": "model", "datasets": "dataset", "spaces": "space"}  # URL word -> type
HASH_CHUNK = 1 << 20


def repo_dir(root, repo_type, repo_id):
    return os.path.join(root, repo_type + "s", *repo_id.split("/"))


def valid_repo_id(repo_id):
    parts = repo_id.split("/")
    return len(parts) == 2 and all(p and p not in (".", "..") for p in parts)


def list_repo_ids(root, repo_type, author=None):
    """The ids ORG/NAME of the store's repos of a type, sorted; only author's (compared without
    case, as the Hub compares names) when given."""
    base = os.path.join(root, repo_type + "s")
    try:
        orgs = sorted(os.listdir(base))
    except OSError:
        return []
    ids = []
    for org in orgs:
        if author is not None and org.lower() != author.lower():
            continue
        try:
            names = sorted(os.listdir(os.path.join(base, org)))
        except OSError:
            continue
        ids += [f"{org}/{name}" for name in names
                if os.path.isfile(os.path.join(base, org, name, "repo.json"))]
    return ids


def write_json_atomic(path, obj):
    tmp = f"{path}.tmp.{os.getpid()}.{threading.get_ident()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def read_repo_json(root, repo_type, repo_id):
    try:
        with open(os.path.join(repo_dir(root, repo_type, repo_id), "repo.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def git_blob_sha1(data_len, chunks):
    h = hashlib.sha1(b"blob %d\0" % data_len)
    for chunk in chunks:
        h.update(chunk)
    return h.hexdigest()


def lfs_pointer(sha256, size):
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def is_lfs(path, size):
    return size > LFS_THRESHOLD or path.endswith(LFS_SUFFIXES)


def describe_file(full_path, rel_path):
    """Hashes one file once: sha256, git blob sha1 (of the file, or of its LFS pointer)."""
    size = os.path.getsize(full_path)
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
    lfs = is_lfs(rel_path, size)
    with open(full_path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            sha256.update(chunk)
            if not lfs:
                sha1.update(chunk)
    entry = {"path": rel_path, "size": size, "sha256": sha256.hexdigest(), "lfs": lfs}
    if lfs:
        pointer = lfs_pointer(entry["sha256"], size)
        entry["oid"] = git_blob_sha1(len(pointer), [pointer])
        entry["pointer_size"] = len(pointer)
    else:
        entry["oid"] = sha1.hexdigest()
    return entry


def list_source_files(src_dir):
    files = []
    for dirpath, dirnames, filenames in os.walk(src_dir):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full):
                files.append(os.path.relpath(full, src_dir).replace(os.sep, "/"))
    return sorted(files)


def commit_sha(repo_type, repo_id, parent, entries):
    h = hashlib.sha1(f"{repo_type} {repo_id}\nparent {parent or ''}\n".encode())
    for e in entries:
        h.update(f"{e['path']}\0{e['size']}\0{e['sha256']}\n".encode())
    return h.hexdigest()


def link_or_copy(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def import_repo(root, repo_id, src_dir, repo_type="model", branch="main", tag=None,
                private=None, gated=None):
    """Adds SRC_DIR as a new commit on BRANCH (created if missing); returns the commit sha."""
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo type must be one of {REPO_TYPES}, not {repo_type!r}")
    if not valid_repo_id(repo_id):
        raise ValueError(f"repo id must look like ORG/NAME, not {repo_id!r}")
    if not os.path.isdir(src_dir):
        raise ValueError(f"source {src_dir!r} is not a directory")
    base = repo_dir(root, repo_type, repo_id)
    os.makedirs(os.path.join(base, "commits"), exist_ok=True)
    info = read_repo_json(root, repo_type, repo_id) or {"private": False, "gated": False,
                                                         "branches": {}, "tags": {}}
    if private is not None:
        info["private"] = bool(private)
    if gated is not None:
        info["gated"] = bool(gated)
    parent = info["branches"].get(branch)
    entries = [describe_file(os.path.join(src_dir, p), p) for p in list_source_files(src_dir)]
    sha = commit_sha(repo_type, repo_id, parent, entries)
    commit_path = os.path.join(base, "commits", sha)
    if not os.path.exists(commit_path + ".hashes.json"):
        staging = f"{commit_path}.staging.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        for e in entries:
            link_or_copy(os.path.join(src_dir, e["path"]), os.path.join(staging, e["path"]))
        shutil.rmtree(commit_path, ignore_errors=True)
        os.replace(staging, commit_path)
        write_json_atomic(commit_path + ".hashes.json",
                          {"parent": parent, "created": time.time(), "files": entries})
    info["branches"][branch] = sha
    if tag:
        info["tags"][tag] = sha
    write_json_atomic(os.path.join(base, "repo.json"), info)
    return sha

