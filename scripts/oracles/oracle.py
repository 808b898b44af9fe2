"""Oracle for the stix crate's differential tests: answers JSON-lines requests on stdin
with the OASIS reference tools (stix2-matcher, stix2-patterns, stix2-validator, stix2).

Requests (one JSON object per line), answers (one line each, same order):
  {"op": "pattern", "pattern": P}             -> {"valid": bool, "crash": bool, "errors": [...]}
  {"op": "match", "pattern": P, "doc": D, "limit": N}
                                               -> {"error": str|null, "bindings": [[int|null, ...], ...]}
  {"op": "object", "doc": D}                  -> {"valid": bool, "messages": [...]}
  {"op": "sco_id", "obj": O}                  -> {"id": str|null}
"""
import json
import sys


def do_pattern(req):
    from stix2patterns.validator import run_validator
    try:
        errs = run_validator(req["pattern"], "2.1")
        return {"valid": len(errs) == 0, "crash": False, "errors": errs}
    except Exception as e:  # the validator crashes on some inputs
        return {"valid": False, "crash": True, "errors": [repr(e)]}


def do_match(req):
    from stix2matcher.matcher import MatchListener, Pattern
    try:
        pattern = Pattern(req["pattern"], "2.1")
        listener = MatchListener([req["doc"]], False, stix_version="2.1")
        pattern.walk(listener)
        out = []
        for b in listener.matched():
            out.append(list(b))
            if len(out) >= req.get("limit", 20):
                break
        return {"error": None, "bindings": out}
    except Exception as e:
        return {"error": repr(e), "bindings": []}


def do_object(req):
    from stix2validator import ValidationOptions, validate_instance
    opts = ValidationOptions(version="2.1")
    try:
        res = validate_instance(req["doc"], opts)
        msgs = [str(e) for e in res.errors]
        return {"valid": bool(res.is_valid), "messages": msgs}
    except Exception as e:
        return {"valid": False, "messages": [repr(e)]}


def do_sco_id(req):
    import stix2
    obj = dict(req["obj"])
    obj.pop("id", None)
    obj.setdefault("spec_version", "2.1")
    try:
        return {"id": stix2.parse(obj, allow_custom=True).id}
    except Exception as e:
        return {"id": None, "error": repr(e)}


OPS = {"pattern": do_pattern, "match": do_match, "object": do_object, "sco_id": do_sco_id}


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        sys.stdout.write(json.dumps(OPS[req["op"]](req)) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
