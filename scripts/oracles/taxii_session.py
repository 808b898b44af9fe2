"""A full TAXII 2.1 session with the OASIS taxii2-client against a server, for the taxii
interoperability test: discovery, API roots, collections, add objects and poll the status,
get objects with each filter, page with `next`, manifest, versions, delete.

Usage: taxii_session.py DISCOVERY_URL USER PASSWORD COLLECTION_ID
Prints one JSON object describing what the client saw; the Rust test checks it.
"""
import json
import sys

from taxii2client.v21 import Server, as_pages


def ids(envelope):
    return sorted(o["id"] for o in envelope.get("objects", []))


def indicator(n, modified):
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": "indicator--00000000-0000-4000-8000-%012d" % n,
        "created": "2026-01-01T00:00:00.000Z",
        "modified": modified,
        "name": "bad address %d" % n,
        "pattern": "[ipv4-addr:value = '203.0.113.%d']" % (n % 250),
        "pattern_type": "stix",
        "valid_from": "2026-01-01T00:00:00Z",
    }


def main():
    url, user, password, coll_id = sys.argv[1:5]
    out = {}
    server = Server(url, user=user, password=password)
    out["title"] = server.title
    out["api_roots"] = [r.url for r in server.api_roots]
    root = server.default
    out["root_title"] = root.title
    out["root_versions"] = root.versions
    colls = root.collections
    out["collections"] = sorted(c.id for c in colls)
    coll = [c for c in colls if c.id == coll_id][0]
    out["can_read"], out["can_write"] = coll.can_read, coll.can_write

    objects = [indicator(n, "2026-01-01T00:00:00.000Z") for n in range(1, 13)]
    objects.append(indicator(1, "2026-01-02T00:00:00.000Z"))  # a second version
    objects.append({"type": "indicator", "id": "indicator--bad"})  # invalid
    status = coll.add_objects({"objects": objects}, wait_for_completion=True, poll_interval=0.2, timeout=30)
    out["status"] = {
        "status": status.status,
        "total": status.total_count,
        "success": status.success_count,
        "failure": status.failure_count,
        "failures": [f["id"] for f in status.failures],
    }
    status.refresh()
    out["status_refreshed"] = status.status

    out["all"] = len(coll.get_objects().get("objects", []))
    out["by_type"] = len(coll.get_objects(type="indicator").get("objects", []))
    out["by_type_none"] = len(coll.get_objects(type="malware").get("objects", []))
    out["by_id"] = ids(coll.get_objects(id=objects[2]["id"]))
    out["version_first"] = [o["modified"] for o in coll.get_objects(id=objects[0]["id"], version="first")["objects"]]
    out["version_last"] = [o["modified"] for o in coll.get_objects(id=objects[0]["id"], version="last")["objects"]]
    out["version_all"] = sorted(o["modified"] for o in coll.get_objects(id=objects[0]["id"], version="all")["objects"])
    out["version_ts"] = [o["modified"] for o in coll.get_objects(id=objects[0]["id"], version="2026-01-01T00:00:00.000Z")["objects"]]
    out["spec_21"] = len(coll.get_objects(spec_version="2.1").get("objects", []))
    out["spec_20"] = len(coll.get_objects(spec_version="2.0").get("objects", []))
    first = coll.get_objects(limit=1)
    out["limit_1"] = len(first["objects"])
    out["limit_1_more"] = first.get("more")
    pages = list(as_pages(coll.get_objects, per_request=5))
    out["pages"] = [len(p.get("objects", [])) for p in pages]
    out["paged_ids"] = sum((ids(p) for p in pages), [])
    resp = coll._conn.session.get(coll.objects_url, params={"limit": 1},
                                  headers={"Accept": "application/taxii+json;version=2.1"})
    out["header_first"] = resp.headers.get("X-TAXII-Date-Added-First")
    out["header_last"] = resp.headers.get("X-TAXII-Date-Added-Last")
    out["added_after_last"] = len(coll.get_objects(added_after=resp.headers.get("X-TAXII-Date-Added-Last")).get("objects", []))
    manifest = coll.get_manifest()
    out["manifest"] = len(manifest.get("objects", []))
    out["manifest_keys"] = sorted(manifest["objects"][0].keys())
    mpages = list(as_pages(coll.get_manifest, per_request=4))
    out["manifest_pages"] = [len(p.get("objects", [])) for p in mpages]
    out["object"] = [o["modified"] for o in coll.get_object(objects[0]["id"])["objects"]]
    out["versions"] = coll.object_versions(objects[0]["id"])["versions"]
    coll.delete_object(objects[0]["id"])
    try:
        coll.get_object(objects[0]["id"])
        out["after_delete"] = "found"
    except Exception as e:  # requests.HTTPError for the 404
        out["after_delete"] = getattr(getattr(e, "response", None), "status_code", repr(e))
    out["all_after_delete"] = len(coll.get_objects().get("objects", []))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
