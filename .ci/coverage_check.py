"""One line of coverage for CI, from the coverage.json the test run writes; fails below the floor per module."""

import json
import sys

FLOOR = 85.0  # percent of lines, for every module of the package

report = json.load(open(sys.argv[1] if len(sys.argv) > 1 else "coverage.json"))
files = {name: f["summary"]["percent_covered"] for name, f in report["files"].items()}
low = sorted((pct, name) for name, pct in files.items() if pct < FLOOR)
lowest_pct, lowest = min((pct, name) for name, pct in files.items())
total = report["totals"]
print(
    f"coverage: {total['percent_covered']:.1f}% of {total['num_statements']} lines in {len(files)} modules; "
    f"lowest {lowest} {lowest_pct:.1f}%; floor {FLOOR:.0f}% per module: "
    + ("met" if not low else "NOT met by " + ", ".join(f"{n} {p:.1f}%" for p, n in low))
)
sys.exit(1 if low else 0)
