"""Print the README's tables of recorded results from the files themselves, so the README quotes only
what the files hold (tests/test_readme_numbers.py checks each table is in the README as printed here).

    .venv/bin/python tools/readme_tables.py            # print them
    .venv/bin/python tools/readme_tables.py --write    # fill the README's <!-- table: NAME --> blocks
"""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.studies import grid as g
from analysis.studies import repro, transfer

ROOT = Path(__file__).resolve().parents[1]


def tables(root: Path = ROOT) -> dict[str, str]:
    """Every table by name, from the recorded files under ``root``/results that exist."""
    out: dict[str, str] = {}
    res = root / "results"
    if (res / "variants_digits.json").is_file():
        results, _, meta = g.load_results(str(res / "variants_digits.json"))
        summary = g.summarise(results, meta.get("test_size") or g.test_size(meta["grid"]))
        for depth in sorted({int(d) for d in summary["depth"]}):
            out[f"variants_digits depth {depth}"] = g.markdown(summary, depth)
        nets, contrasts = g.degradation(results)
        if not nets.empty:
            out["degradation_digits"] = g.degradation_markdown(nets, contrasts)
    for sweep in sorted(res.glob("gate_sweep_digits*.json")):  # depth 20, and _56: another depth
        results, _, meta = g.load_results(str(sweep))
        out[sweep.stem] = g.sweep_markdown(g.gate_sweep(g.summarise(results, meta.get("test_size")
                                                                    or g.test_size(meta["grid"]))))
    for name in ("transfer_digits", "transfer_mnist1d"):
        if (res / f"{name}.json").is_file():
            out[name] = transfer.markdown(transfer.load_results(str(res / f"{name}.json")))
    if (res / "reproducibility.json").is_file():
        out["reproducibility"] = "\n".join(f"- {line}" for line in repro.statement(repro.load(res / "reproducibility.json")))
    return out


def fill(readme: str, found: dict[str, str]) -> str:
    """``readme`` with the text between each ``<!-- table: NAME -->`` and the next ``<!-- /table -->``
    replaced by table NAME (markers without a table are left as they are)."""
    out, rest = [], readme
    while (start := rest.find("<!-- table: ")) >= 0:
        head_end = rest.index("-->", start) + 3
        name = rest[start + len("<!-- table: "):head_end - 3].strip()
        end = rest.index("<!-- /table -->", head_end)
        out.append(rest[:head_end])
        out.append(f"\n{found[name]}\n" if name in found else rest[head_end:end])
        rest = rest[end:]
    return "".join(out) + rest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--write", action="store_true", help="fill the README's <!-- table: NAME --> blocks in place")
    args = ap.parse_args(argv)
    found = tables()
    if args.write:
        readme = ROOT / "README.md"
        readme.write_text(fill(readme.read_text(encoding="utf-8"), found), encoding="utf-8")
        print(f"filled {readme}")
        return 0
    for name, text in found.items():
        print(f"<!-- table: {name} -->\n{text}\n<!-- /table -->\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
