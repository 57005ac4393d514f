"""Admin calls on the Hub origin (/_emulator/...): knobs, the request log, branch moves. They are
never logged nor faulted."""
import json
import os

from .http_io import error_answer, json_answer
from .store import REPO_TYPES, read_repo_json, repo_dir, valid_repo_id, write_json_atomic


class AdminRoutes:
    """Mixed into the Hub's handler; `self.state` is the EmulatorState."""

    def admin(self, method, seg, body):
        state = self.state
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            return error_answer(400, None, "admin calls take a JSON body")
        if seg == ["config"] and method == "GET":
            return json_answer(200, state.snapshot_knobs())
        if seg == ["config"] and method == "POST":
            try:
                return json_answer(200, state.set_knobs(payload))
            except ValueError as e:
                return error_answer(400, None, str(e))
        if seg == ["reset"] and method == "POST":
            state.reset_knobs()
            return json_answer(200, state.snapshot_knobs())
        if seg == ["log"] and method == "GET":
            with state.lock:
                return json_answer(200, list(state.log))
        if seg == ["log", "clear"] and method == "POST":
            with state.lock:
                state.log.clear()
            return json_answer(200, {"ok": True})
        if seg == ["branch"] and method == "POST":
            return self.admin_move_branch(payload)
        return error_answer(404, None, "unknown admin call")

    def admin_move_branch(self, payload):
        state = self.state
        repo_type = payload.get("type", "model")
        repo_id, branch, commit = payload.get("repo", ""), payload.get("branch", ""), payload.get("commit", "")
        if repo_type not in REPO_TYPES or not valid_repo_id(repo_id):
            return error_answer(400, None, "give repo as ORG/NAME and type as model|dataset|space")
        with state.lock:
            info = read_repo_json(state.root, repo_type, repo_id)
            if info is None:
                return error_answer(404, "RepoNotFound", "Repository not found")
            target = info["branches"].get(commit) or info.get("tags", {}).get(commit) or commit
            if not os.path.exists(os.path.join(repo_dir(state.root, repo_type, repo_id), "commits",
                                               str(target) + ".hashes.json")):
                return error_answer(404, "RevisionNotFound", f"no commit {commit}")
            info["branches"][branch] = target
            write_json_atomic(os.path.join(repo_dir(state.root, repo_type, repo_id), "repo.json"), info)
        return json_answer(200, {"branch": branch, "commit": target})

