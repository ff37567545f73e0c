"""Print the README's tables of recorded results from the files themselves, so the README quotes only
what the files hold (tests/test_readme_numbers.py checks each table is in the README as printed here).

    .venv/bin/python tools/readme_tables.py
"""

from __future__ import annotations

from pathlib import Path

from analysis.studies import grid as g
from analysis.studies import repro

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
    if (res / "gate_sweep_digits.json").is_file():
        results, _, meta = g.load_results(str(res / "gate_sweep_digits.json"))
        out["gate_sweep_digits"] = g.sweep_markdown(g.gate_sweep(g.summarise(results, meta.get("test_size")
                                                                             or g.test_size(meta["grid"]))))
    if (res / "reproducibility.json").is_file():
        out["reproducibility"] = "\n".join(f"- {line}" for line in repro.statement(repro.load(res / "reproducibility.json")))
    return out


if __name__ == "__main__":
    for name, text in tables().items():
        print(f"<!-- {name} -->\n{text}\n")
