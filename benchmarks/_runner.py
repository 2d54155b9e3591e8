"""Run one measurement per child process (so peak RSS belongs to one implementation) and alternate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def measure(script: Path, args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, str(script), "--child", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def report(rows: list[tuple[str, dict, dict]]) -> None:
    print(
        f"{'case':32s} {'openwan s':>10s} {'diffusers s':>12s} {'time x':>7s} {'openwan MB':>11s} "
        f"{'diffusers MB':>13s} {'mem x':>6s} {'rel diff':>9s}"
    )
    for name, ours, ref in rows:
        print(
            f"{name:32s} {ours['seconds']:10.2f} {ref['seconds']:12.2f} "
            f"{ours['seconds'] / ref['seconds']:7.2f} {ours['peak_mb']:11.0f} {ref['peak_mb']:13.0f} "
            f"{ours['peak_mb'] / ref['peak_mb']:6.2f} {ours.get('rel_diff', float('nan')):9.2e}"
        )
