"""Content-addressed blob storage on local disk: a file's name is its SHA-256."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


class BlobStore:
    """Blobs live at `<root>/<sha[:2]>/<sha>`; writes land atomically via rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(self, data: bytes, sha256: str | None = None) -> str:
        """Store `data`; `sha256`: its hash where the caller has it already (not hashed again)."""
        sha = sha256 or hashlib.sha256(data).hexdigest()
        if self.exists(sha):
            self._touch(sha)  # reused: retention leaves fresh files alone
        else:
            self._commit(self._write_temp(data), sha)
        return sha

    def _touch(self, sha: str) -> None:
        try:
            os.utime(self.path(sha))
        except FileNotFoundError:
            pass

    def put_file(self, src: Path, sha: str) -> str:
        """Move a finished temp file into the store (it must be on the same filesystem) under
        `sha`, its SHA-256 as the caller read it (`media.probe` does, streaming the file)."""
        if self.exists(sha):
            src.unlink()
            self._touch(sha)
        else:
            self._commit(src, sha)
        return sha

    def temp_path(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        os.close(fd)
        return Path(name)

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def _write_temp(self, data: bytes) -> Path:
        tmp = self.temp_path()
        tmp.write_bytes(data)
        return tmp

    def _commit(self, tmp: Path, sha: str) -> None:
        dest = self.path(sha)
        dest.parent.mkdir(exist_ok=True)
        os.replace(tmp, dest)
