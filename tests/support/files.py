"""Digests of files for tests: the independent reference a mounted file is compared with."""
import hashlib


def sha256_of(path, chunk=1 << 20):
    """sha256 hex digest of a whole file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_range(path, offset, length):
    """sha256 hex digest of length bytes of path at offset."""
    with open(path, "rb") as f:
        f.seek(offset)
        return hashlib.sha256(f.read(length)).hexdigest()
