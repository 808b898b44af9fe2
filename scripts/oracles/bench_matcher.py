"""Times stix2-matcher on the corpus written by `cargo bench -p stix --bench compare`.

Usage: bench_matcher.py CORPUS_DIR [--patterns N] [--observations M] [--set-patterns K]
Prints one JSON object: per-pair timing (each pattern against each single observation)
and whole-set timing (each of the first K patterns against all observations at once;
patterns that take longer than --timeout seconds are counted, not timed).
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
    ap.add_argument("--timeout", type=int, default=60, help="seconds per whole-set pattern")
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

    import signal

    def on_alarm(signum, frame):
        raise TimeoutError()

    signal.signal(signal.SIGALRM, on_alarm)
    set_hits = 0
    timeouts = 0
    dt_set = 0.0
    n_set = 0
    set_times = []
    for c in compiled[: a.set_patterns]:
        t1 = time.perf_counter()
        signal.alarm(a.timeout)
        try:
            if c.match([whole]):
                set_hits += 1
            n_set += 1
            dt_set += time.perf_counter() - t1
            set_times.append(time.perf_counter() - t1)
        except TimeoutError:
            timeouts += 1
            set_times.append(None)
        finally:
            signal.alarm(0)
    print(json.dumps({
        "pairs": pairs, "pair_seconds": dt, "pairs_per_s": pairs / dt, "pair_hits": hits,
        "set_patterns": n_set, "set_seconds": dt_set,
        "set_observations": sum(1 for o in whole["objects"] if o.get("type") == "observed-data"),
        "set_hits": set_hits, "set_timeouts": timeouts, "set_timeout_s": a.timeout,
        "set_times": set_times,
    }))


if __name__ == "__main__":
    main()
