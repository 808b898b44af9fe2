#!/usr/bin/env python3
"""Formats the JSON that bench/exercises.sh wrote into the tables of exercises.md.

    python3 bench/exercises_report.py bench/results/2026-12-01-vm/exercises
"""
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/2026-12-01-vm/exercises")
runs = {}
for seed in (1, 2, 3):
    f = out / f"run-{seed}.json"
    if f.exists() and f.stat().st_size:
        runs[seed] = json.loads(f.read_text())
names = [v["scenario"] for v in next(iter(runs.values()))["scenarios"]] if runs else []
print("| scenario | " + " | ".join(f"seed {s}: detected, time to detect" for s in runs) + " | rules fired (all seeds) |")
print("|---|" + "---|" * len(runs) + "---|")
for name in names:
    cells, fired = [], set()
    for seed, run in runs.items():
        v = next(v for v in run["scenarios"] if v["scenario"] == name)
        ttd = v["time_to_detect_s"]
        cells.append(("yes, %.2f s" % ttd) if v["detected"] else "**no**")
        fired.update(v["rules_fired"])
    print(f"| {name} | " + " | ".join(cells) + f" | {', '.join(sorted(fired)) or '-'} |")
print()
for seed, run in runs.items():
    fa = run["false_alerts"]
    print(f"- seed {seed}: {len(fa)} false alert(s) over {run['benign_device_hours']:.2f} device-hours of live benign background"
          + "".join(f"\n  - `{a['rule']}` on {a.get('device_id') or a.get('source')}: {a['title']}" for a in fa))
print()
print("| seed | device-hours | observations | false alerts | per 10,000 device-hours | by rule | honest events | replay time |")
print("|---|---|---|---|---|---|---|---|")
for seed in (1, 2, 3):
    f = out / f"soak-{seed}.json"
    if not f.exists() or not f.stat().st_size:
        continue
    d = json.loads(f.read_text())
    by = ", ".join(f"{k} {v}" for k, v in d["alerts_by_rule"].items()) or "-"
    h = d["honest_events"]
    print(f"| {seed} | {d['device_hours']:.0f} | {d['observations']} | {d['alerts']} | {d['alerts_per_10k_device_hours']:.1f} | {by} | "
          f"{h['maintenance_windows']} maintenance, {h['outages']} outages, {h['firmware_updates']} updates | {d['elapsed_s']:.0f} s |")
print()
soaks = {}
for seed in (1, 2, 3):
    f = out / f"soak-{seed}.json"
    if f.exists() and f.stat().st_size:
        d = json.loads(f.read_text())
        if d.get("in_process_scenarios"):
            soaks[seed] = d["in_process_scenarios"]
if soaks:
    first = next(iter(soaks.values()))
    print("| scenario (in process) | " + " | ".join(f"seed {s}" for s in soaks) + " | rules fired (all seeds) |")
    print("|---|" + "---|" * len(soaks) + "---|")
    for v0 in first["scenarios"]:
        name = v0["scenario"]
        cells, fired = [], set()
        for seed, score in soaks.items():
            v = next(v for v in score["scenarios"] if v["scenario"] == name)
            cells.append(("yes, %.2f s" % v["time_to_detect_s"]) if v["detected"] else "**no**")
            fired.update(v["rules_fired"])
        print(f"| {name} | " + " | ".join(cells) + f" | {', '.join(sorted(fired)) or '-'} |")
    for seed, score in soaks.items():
        fa = score["false_alerts"]
        print(f"- seed {seed}: {len(fa)} unexplained alert(s) while the scenarios ran"
              + "".join(f"\n  - `{a['rule']}` on {a.get('device_id') or a.get('source')}: {a['title']}" for a in fa))
