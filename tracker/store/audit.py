"""``verify --deep``: every stored object of a complete dataset read back against its manifest.

``_SUCCESS`` says a writer finished; it does not say the bytes are still
what was written.  The deep check reads every part (size and CRC-32C of
the stored object, as ``tracker cat`` does), decodes it with the one text
parser and counts its rows, and checks that ``schema.sql`` and the manifest
are there.  Each bad object is one :class:`Problem`, printed as one line::

    missing <url>
    corrupt <url>: crc32c differs from the manifest: expected ..., got ...
    rows <url>: manifest 10, part 9

Only the core is used (no pyarrow): verify runs on the replica hosts.
"""

from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass
from typing import Any, Iterable

from tracker.errors import UploadFailed
from tracker.store import layout
from tracker.store.reader import CorruptObject, verified_chunks
from tracker.store.sinks import Store
from tracker.store.textformat import BlockParser, FormatError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One bad object: ``kind`` is missing, corrupt or rows."""

    kind: str
    url: str
    detail: str = ""

    @property
    def line(self) -> str:
        return f"{self.kind} {self.url}: {self.detail}" if self.detail else f"{self.kind} {self.url}"


def _detail(url: str, message: str) -> str:
    """An error's message without the object's URL in front (the line names it already)."""
    message = " ".join(message.split())
    return message[len(url) + 2 :] if message.startswith(f"{url}: ") else message


def count_rows(chunks: Iterable[bytes], ncols: int) -> int:
    """Rows of decompressed text-format data; FormatError when it is not ``ncols`` fields a row."""
    parser = BlockParser(ncols)
    rows = 0
    for chunk in chunks:
        rows += sum(block.rows for block in parser.feed(chunk))
    return rows + sum(block.rows for block in parser.finish())


def audit_part(store: Store, key: str, entry: dict[str, Any], ncols: int) -> Problem | None:
    """One part against its manifest entry: stored size, CRC-32C, decodable, row count.

    An object the store cannot hand out at all (network, permissions) is not
    a finding about the object: that error propagates and fails verify.
    """
    url = store.url(key)
    try:
        rows = count_rows(verified_chunks(store, key, entry), ncols)
    except (CorruptObject, FormatError) as exc:
        return Problem("corrupt", url, _detail(url, str(exc)))
    except UploadFailed as exc:
        # verified_chunks reports a size/CRC match that still does not
        # decompress as "<url>: cannot decode: ..."; anything else is the
        # store failing, not the object.
        if f"{url}: cannot decode" not in str(exc):
            raise
        return Problem("corrupt", url, _detail(url, str(exc)))
    expected = entry.get("rows")
    if rows != expected:
        return Problem("rows", url, f"manifest {expected}, part {rows}")
    return None


def read_manifest(store: Store, key: str) -> tuple[dict[str, Any] | None, Problem | None]:
    """The dataset's manifest, or the problem that it is missing or unreadable."""
    data = store.get(key)
    if data is None:
        return None, Problem("missing", store.url(key))
    try:
        document = json.loads(data)
        if not isinstance(document.get("units"), list) or not isinstance(document.get("columns"), list) or not document["columns"]:
            raise ValueError("no units or no columns")
        return document, None
    except (ValueError, AttributeError) as exc:
        return None, Problem("corrupt", store.url(key), f"not a readable manifest: {exc}")


def audit_dataset(store: Store, keys: layout.DatasetKeys) -> list[Problem]:
    """Every object of one complete dataset (it has ``_SUCCESS``) against its manifest."""
    present = set(store.list(keys.prefix + "/"))
    document, problem = read_manifest(store, keys.manifest)
    if document is None:
        return [problem] if problem is not None else []
    problems: list[Problem] = []
    if keys.schema not in present:
        problems.append(Problem("missing", store.url(keys.schema)))
    units = document["units"]
    listed = sum(int(u.get("rows", 0)) for u in units)
    if document.get("rows") is not None and document["rows"] != listed:
        problems.append(Problem("rows", store.url(keys.manifest), f"manifest total {document['rows']}, units {listed}"))
    ncols = len(document["columns"])
    for entry in sorted(units, key=lambda u: u.get("index", 0)):
        # The folder, not the key's prefix, identifies the object (as for cat).
        key = f"{keys.prefix}/{posixpath.basename(str(entry.get('key', '')))}"
        if key not in present:
            problems.append(Problem("missing", store.url(key)))
            continue
        found = audit_part(store, key, entry, ncols)
        if found is not None:
            problems.append(found)
    log.info(
        "event=verify_deep_dataset prefix=%s units=%d rows=%d problems=%d", keys.prefix, len(units), listed, len(problems)
    )
    return problems
