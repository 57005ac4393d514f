"""The CDN origin: serves ROOT/{type}s/ORG/NAME/commits/SHA/PATH to signed, unexpired URLs only,
never asking for a token (like S3/CloudFront behind the Hub's 302)."""
import hashlib
import hmac
import os
import time
import urllib.parse

from .http_io import Answer, BaseHandler, file_answer
from .store import TYPE_PREFIXES


class CdnHandler(BaseHandler):
    origin = "cdn"

    def route(self, method, raw_path, query, body):
        if method not in ("GET", "HEAD"):
            return Answer(405, {"Content-Type": "text/plain"}, b"Method not allowed\n")
        params = urllib.parse.parse_qs(query)
        try:
            expires = int(params["Expires"][0])
            signature = params["Signature"][0]
        except (KeyError, ValueError, IndexError):
            return self.denied("missing signature")
        if not hmac.compare_digest(signature, self.state.signature(raw_path, expires)):
            return self.denied("bad signature")
        if time.time() > expires:
            return self.denied("request has expired")
        rel = urllib.parse.unquote(raw_path).lstrip("/")
        parts = rel.split("/")
        if len(parts) < 6 or parts[0] not in TYPE_PREFIXES or parts[3] != "commits" or ".." in parts:
            return Answer(404, {"Content-Type": "text/plain"}, b"Not found\n")
        meta = self.state.commit_meta(TYPE_PREFIXES[parts[0]], parts[1] + "/" + parts[2], parts[4])
        entry = meta and meta["by_path"].get("/".join(parts[5:]))
        if not entry:
            return Answer(404, {"Content-Type": "text/plain"}, b"Not found\n")
        full = os.path.join(self.state.root, *parts)
        etag = hashlib.md5(entry["sha256"].encode()).hexdigest()  # S3-like: not the sha256
        headers = {"ETag": f'"{etag}"', "Cache-Control": "public, max-age=604800, immutable",
                   "Last-Modified": "Thu, 01 Jan 2026 00:00:00 GMT"}
        return file_answer(self.state, full, entry["size"], self.headers.get("Range"), method, headers, "cdn")

    def denied(self, why):
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>"
                f"<Message>{why}</Message></Error>").encode()
        return Answer(403, {"Content-Type": "application/xml"}, body)

