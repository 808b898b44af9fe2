"""Times stix2-matcher on the corpus written by `cargo bench -p stix --bench compare`.

Usage: bench_matcher.py CORPUS_DIR [--patterns N] [--observations M] [--set-patterns K]
Prints one JSON object: per-pair timing (each pattern against each single observation)
and whole-set timing (each of the first K patterns against all observations at once).
"""
import argparse
import json
import time

from stix2matcher.matcher import Pattern


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus")
    ap.add_argument("--patterns", type=int, default=200)
    ap.add_argument("--observations", type=int, default=100)
    ap.add_argument("--set-patterns", type=int, default=10)
    a = ap.parse_args()
    patterns = [line.rstrip("\n") for line in open(a.corpus + "/patterns.txt") if line.strip()]
    per_obs = json.load(open(a.corpus + "/observations.json"))
    whole = json.load(open(a.corpus + "/bundle.json"))
    patterns_p = patterns[: a.patterns]
    obs_p = per_obs[: a.observations]

    compiled = [Pattern(p, "2.1") for p in patterns_p]
    hits = 0
    t0 = time.perf_counter()
    for c in compiled:
        for b in obs_p:
            if c.match([b]):
                hits += 1
    dt = time.perf_counter() - t0
    pairs = len(compiled) * len(obs_p)

    set_hits = 0
    t1 = time.perf_counter()
    for c in compiled[: a.set_patterns]:
        if c.match([whole]):
            set_hits += 1
    dt_set = time.perf_counter() - t1
    n_set = min(a.set_patterns, len(compiled))
    print(json.dumps({
        "pairs": pairs, "pair_seconds": dt, "pairs_per_s": pairs / dt, "pair_hits": hits,
        "set_patterns": n_set, "set_seconds": dt_set,
        "set_pairs_per_s": n_set * len(per_obs) / dt_set if dt_set > 0 else None,
        "set_hits": set_hits,
    }))


if __name__ == "__main__":
    main()
