"""Per-image artifacts kept in the sink beside the tables: today each image's PSF model
(``--psf auto``), so that a user can inspect it or measure again with ``--psf FILE``.

Layout: ``<sink>/artifacts/<kind>/<config_hash>/<image_id>.<kind>``. The image id is a
hash of (path, content hash, config hash), so a name is unique per verdict and writing
it again (a batch replayed after a crash) rewrites the same bytes; the images row names
the file in its ``psf_model`` column (relative to the sink). The files carry their own
provenance (for a PSF model: SXSPATH, SXSHASH, SXSCFG, SXSID cards in its primary header).
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = "artifacts"
#: The images-table column naming each kind's file.
COLUMNS = {"psf": "psf_model"}


def relative_path(record: dict, kind: str) -> str:
    """Where an image's artifact of `kind` lives, relative to the sink."""
    return f"{ROOT}/{kind}/{record['config_hash']}/{record['image_id']}.{kind}"


def store(sink_dir: str | os.PathLike[str], record: dict, artifacts: dict[str, bytes]) -> dict[str, str]:
    """Write `artifacts` ({kind: bytes}) of the image `record` describes into the sink
    (atomically: a temporary name, then a rename) and return the images-row columns that
    name them ({"psf_model": "artifacts/psf/<config>/<image_id>.psf"})."""
    columns = {}
    for kind, data in artifacts.items():
        rel = relative_path(record, kind)
        path = Path(sink_dir) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        columns[COLUMNS.get(kind, f"{kind}_artifact")] = rel
    return columns
