"""Pulls a collection as a partner with the OASIS taxii2-client, for the threat-sharing
tests: every page of the latest versions, and every version.

Usage: taxii_pull.py DISCOVERY_URL USER PASSWORD COLLECTION_ID
Prints {"objects": [...latest versions...], "versions": [[id, modified], ...]}.
"""
import json
import sys

from taxii2client.v21 import Server, as_pages


def main():
    url, user, password, coll_id = sys.argv[1:5]
    server = Server(url, user=user, password=password)
    root = server.default
    coll = next(c for c in root.collections if c.id == coll_id)
    objects = []
    for page in as_pages(coll.get_objects, per_request=50):
        objects.extend(page.get("objects", []))
    versions = []
    for page in as_pages(coll.get_objects, per_request=50, version="all"):
        versions.extend([o["id"], o.get("modified", "")] for o in page.get("objects", []))
    print(json.dumps({"objects": objects, "versions": sorted(versions)}))


if __name__ == "__main__":
    main()
