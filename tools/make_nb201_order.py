"""Regenerate lightning_epe/spaces/nb201_order.npy from a NAS-Bench-201 table.

Usage: python tools/make_nb201_order.py ../shared/data/nb201/nb201_accuracies.csv
The CSV needs the columns ``index`` and ``arch_str``; the output holds, for each benchmark index,
the cell's base-5 code (uint16), i.e. the benchmark's own order.
"""
import csv
import sys
from pathlib import Path

import numpy as np

from lightning_epe.spaces.nb201 import SPACE_SIZE, arch_code, parse_arch

rows = list(csv.DictReader(open(sys.argv[1], newline="")))
codes = np.full(SPACE_SIZE, -1, dtype=np.int64)
for row in rows:
    codes[int(row["index"])] = arch_code(parse_arch(row["arch_str"]))
assert (codes >= 0).all() and len(set(codes.tolist())) == SPACE_SIZE, "table is not a full permutation"
out = Path(__file__).resolve().parents[1] / "lightning_epe" / "spaces" / "nb201_order.npy"
np.save(out, codes.astype(np.uint16))
print(f"wrote {out} ({out.stat().st_size} bytes)")
