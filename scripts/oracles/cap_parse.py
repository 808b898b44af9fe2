"""Reads CAP 1.2 documents or Atom feeds of them with capparselib (an independent parser,
which validates against the OASIS schema through lxml) and prints one JSON line per file:
{"file": ..., "alerts": [summary, ...]} or {"file": ..., "error": ...}.

Usage: python cap_parse.py FILE...
"""
import json
import sys

from capparselib.parsers import CAPParser


def text(value):
    return None if value is None else str(value)


def summary(alert):
    infos = []
    for info in alert.get("cap_info", []):
        areas = []
        for area in info.get("cap_area", []):
            areas.append({
                "desc": text(area.get("area_description")),
                "polygons": [str(p) for p in area.get("polygons", [])],
                "circles": [str(c) for c in area.get("circles", [])],
                "geocodes": [[str(g["valueName"]), str(g["value"])] for g in area.get("geocodes", [])],
            })
        infos.append({
            "language": text(info.get("cap_language")),
            "event": text(info.get("cap_event")),
            "headline": text(info.get("cap_headline")),
            "resources": [str(r["mimeType"]) for r in info.get("cap_resource", [])],
            "areas": areas,
        })
    return {
        "identifier": text(alert.get("cap_id")),
        "sender": text(alert.get("cap_sender")),
        "sent": text(alert.get("cap_sent")),
        "status": text(alert.get("cap_status")),
        "msgType": text(alert.get("cap_message_type")),
        "references": text(alert.get("cap_references")),
        "info": infos,
    }


for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    try:
        alerts = [summary(a) for a in CAPParser(raw).as_dict()]
        print(json.dumps({"file": path, "alerts": alerts}))
    except Exception as e:  # the parser raises bare Exceptions
        print(json.dumps({"file": path, "error": str(e)}))
