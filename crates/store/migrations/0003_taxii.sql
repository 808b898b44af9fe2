-- Threat intelligence shared over TAXII: the objects of each collection (one row per
-- version), the collections' date_added clocks, POST statuses and partner feed bookmarks.

CREATE TABLE intel_objects (
    rowid         INTEGER PRIMARY KEY,
    collection    TEXT NOT NULL,
    id            TEXT NOT NULL,
    version_us    INTEGER NOT NULL,
    version       TEXT NOT NULL,
    date_added_us INTEGER NOT NULL,
    type          TEXT NOT NULL,
    spec_version  TEXT NOT NULL,
    tlp           INTEGER NOT NULL,
    is_first      INTEGER NOT NULL,
    is_last       INTEGER NOT NULL,
    body          TEXT NOT NULL
);
-- One row per (collection, object, version).
CREATE UNIQUE INDEX intel_objects_version ON intel_objects (collection, id, version_us);
-- Pages in (date_added, id, version) order; covering for manifests and filters, so a page
-- reads O(page) index entries and only the bodies it returns.
CREATE INDEX intel_objects_page ON intel_objects
    (collection, date_added_us, id, version_us, tlp, is_last, is_first, spec_version, type);
CREATE INDEX intel_objects_type_page ON intel_objects
    (collection, type, date_added_us, id, version_us);

-- The last date_added given in each collection: the next write is strictly later, so a
-- reader's cursor never passes a record that is added afterwards.
CREATE TABLE intel_clock (
    collection    TEXT PRIMARY KEY NOT NULL,
    last_added_us INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE intel_statuses (
    root       TEXT NOT NULL,
    id         TEXT NOT NULL,
    owner      TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (root, id)
) WITHOUT ROWID;
CREATE INDEX intel_statuses_created ON intel_statuses (created_us);

CREATE TABLE intel_bookmarks (
    feed        TEXT PRIMARY KEY NOT NULL,
    added_after TEXT NOT NULL
) WITHOUT ROWID;
