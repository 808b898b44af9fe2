"""OpenTAXII (EclecticIQ) as a TAXII 2.1 server for the GET-objects comparison of
`cargo run --release -p app --example taxii_bench -- --opentaxii PYTHON`.

Usage: serve.py DIR PORT
Creates, in DIR, SQLite databases with one account (bench / bench-pass, admin), one API
root and one collection holding the STIX objects of DIR/objects.jsonl (the benchmark
writes the same objects it loads into ours and medallion), prints
"ready <api root URL> <collection id>" and serves on 127.0.0.1:PORT with Flask's threaded
server (as medallion runs), debug off.
"""
import json
import os
import sys


def main():
    work, port = sys.argv[1], int(sys.argv[2])
    with open(os.path.join(work, "objects.jsonl")) as f:
        objects = [json.loads(line) for line in f if line.strip()]
    conf = os.path.join(work, "opentaxii.yml")
    with open(conf, "w") as f:
        json.dump(
            {
                "domain": "127.0.0.1:%d" % port,
                "support_basic_auth": True,
                "return_server_error_details": True,
                "auth_api": {
                    "class": "opentaxii.auth.sqldb.SQLDatabaseAPI",
                    "parameters": {
                        "db_connection": "sqlite:///%s/auth.db" % work,
                        "create_tables": True,
                        "secret": os.urandom(16).hex(),
                        "token_ttl_secs": 3600,
                    },
                },
                "taxii1": None,
                "taxii2": {
                    "title": "opentaxii",
                    "max_content_length": 100000000,
                    "public_discovery": False,
                    "persistence_api": {
                        "class": "opentaxii.persistence.sqldb.Taxii2SQLDatabaseAPI",
                        "parameters": {
                            "db_connection": "sqlite:///%s/data.db" % work,
                            "create_tables": True,
                        },
                    },
                },
                "logging": {"opentaxii": "warning", "root": "warning"},
            },
            f,
        )
    os.environ["OPENTAXII_CONFIG"] = conf
    from opentaxii.config import ServerConfig
    from opentaxii.middleware import create_app
    from opentaxii.server import TAXIIServer

    server = TAXIIServer(ServerConfig())
    app = create_app(server)
    app.debug = False
    with app.app_context():
        server.auth.api.create_account("bench", "bench-pass", is_admin=True)
        api = server.servers.taxii2.persistence.api
        root = api.add_api_root(title="bench", default=True)
        coll = api.add_collection(api_root_id=root.id, title="bench")
        batch = 1000
        for start in range(0, len(objects), batch):
            api.add_objects(
                api_root_id=root.id,
                collection_id=coll.id,
                objects=objects[start : start + batch],
            )
    print("ready http://127.0.0.1:%d/taxii2/%s/ %s" % (port, root.id, coll.id), flush=True)
    app.run(host="127.0.0.1", port=port, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
