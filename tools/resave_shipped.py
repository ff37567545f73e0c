"""Re-save the shipped checkpoints in the current file format, weights untouched.

For a format addition that older files lack (here: the metadata hash, ``meta_sha256``). Each file is
loaded, checked, and saved again with its own model and metadata; the weights' hash must come out
identical (refused otherwise). Stored path measurements are measurements of the weights, so their
record of the file's SHA-256 is moved to the new file (only where it matched the old one).

    .venv/bin/python tools/resave_shipped.py
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from analysis.core.reporting import write_json
from analysis.experiments import paths
from analysis.store.checkpoints import load_checkpoint, save_checkpoint, shipped_checkpoints
from analysis.store.weights import state_dict_hash

ROOT = Path(__file__).resolve().parent.parent


def resave(path: Path) -> None:
    before = paths.file_digest(path)
    ck = load_checkpoint(path)
    weights = state_dict_hash(ck.model.state_dict())
    save_checkpoint(path, ck.model, ck.meta)
    again = load_checkpoint(path)
    same_meta = dataclasses.replace(again.meta, content_sha256="") == dataclasses.replace(ck.meta, content_sha256="")
    if state_dict_hash(again.model.state_dict()) != weights or not same_meta or again.spec != ck.spec:
        raise SystemExit(f"{path}: re-saving changed the net or its metadata")
    results = paths.results_file(path)
    if results.is_file():
        doc = json.loads(results.read_text())
        if doc.get("sha256") == before:
            doc["sha256"] = paths.file_digest(path)
            write_json(results, doc, indent=1)
    print(f"{path.relative_to(ROOT)}: re-saved (weights {weights[:19]}…)")


def main() -> None:
    files = sorted({*shipped_checkpoints().values(), *(ROOT / "checkpoints" / "transfer").glob("*.pt")})
    for path in files:
        resave(path)


if __name__ == "__main__":
    main()
