-- Threat intelligence shared over TAXII (mirrors the embedded 0003_taxii): the objects of
-- each collection (one row per version), the collections' date_added clocks, POST statuses
-- and partner feed bookmarks.

CREATE TABLE intel_objects (
    row_id        BIGSERIAL PRIMARY KEY,
    collection    TEXT NOT NULL,
    id            TEXT COLLATE "C" NOT NULL,
    version_us    BIGINT NOT NULL,
    version       TEXT NOT NULL,
    date_added_us BIGINT NOT NULL,
    type          TEXT NOT NULL,
    spec_version  TEXT NOT NULL,
    tlp           SMALLINT NOT NULL,
    is_first      BOOLEAN NOT NULL,
    is_last       BOOLEAN NOT NULL,
    body          TEXT NOT NULL
);
-- One row per (collection, object, version).
CREATE UNIQUE INDEX intel_objects_version ON intel_objects (collection, id, version_us);
-- Pages in (date_added, id, version) order, so a page reads O(page) index entries.
CREATE INDEX intel_objects_page ON intel_objects (collection, date_added_us, id, version_us);
CREATE INDEX intel_objects_type_page ON intel_objects
    (collection, type, date_added_us, id, version_us);

-- The last date_added given in each collection: the next write is strictly later, so a
-- reader's cursor never passes a record that is added afterwards.
CREATE TABLE intel_clock (
    collection    TEXT COLLATE "C" PRIMARY KEY,
    last_added_us BIGINT NOT NULL
);

CREATE TABLE intel_statuses (
    root       TEXT COLLATE "C" NOT NULL,
    id         TEXT COLLATE "C" NOT NULL,
    owner      TEXT NOT NULL,
    created_us BIGINT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (root, id)
);
CREATE INDEX intel_statuses_created ON intel_statuses (created_us);

CREATE TABLE intel_bookmarks (
    feed        TEXT COLLATE "C" PRIMARY KEY,
    added_after TEXT NOT NULL
);
