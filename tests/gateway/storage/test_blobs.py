from __future__ import annotations

import hashlib
from pathlib import Path

from gateway.storage.blobs import BlobStore


def test_blobs_are_stored_by_their_hash_and_a_second_copy_is_a_reuse(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    data = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40
    sha = hashlib.sha256(data).hexdigest()
    assert blobs.put(data) == sha == blobs.put(data, sha)  # the second is a reuse: one file
    assert blobs.path(sha).read_bytes() == data
    tmp = blobs.temp_path()
    tmp.write_bytes(data[::-1])
    other = hashlib.sha256(data[::-1]).hexdigest()
    assert blobs.put_file(tmp, other) == other  # a probe's hash, not read again
    assert blobs.path(other).read_bytes() == data[::-1] and not tmp.exists()
    tmp = blobs.temp_path()
    tmp.write_bytes(data[::-1])
    assert blobs.put_file(tmp, other) == other and not tmp.exists()  # a reuse: the temp file goes
    assert sorted(p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file()) == sorted([sha, other])
