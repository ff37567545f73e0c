"""Print the fuzz suite's table from the last run: ``python -m tests.fuzz.table``."""

import json

from tests.fuzz.harness import RESULTS


def main() -> None:
    rows = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))]
    print("| category | cases | clean | valid | crashes | silent |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['category']} | {r['cases']} | {r['clean']} | {r['valid']} | {r['crash']} | {r['silent']} |")
    total = {k: sum(r[k] for r in rows) for k in ("cases", "clean", "valid", "crash", "silent")}
    print(f"| **all** | {total['cases']} | {total['clean']} | {total['valid']} | {total['crash']} | {total['silent']} |")


if __name__ == "__main__":
    main()
