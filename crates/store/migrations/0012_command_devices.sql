-- Which devices each gateway command names, so a device's commands are found by index
-- (the device page) rather than by scanning recent commands. Filled by put_command;
-- commands stored before this migration are indexed here from their documents.

CREATE TABLE command_devices (
    device_id  TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    command_id TEXT NOT NULL,
    PRIMARY KEY (device_id, created_at, command_id)
) WITHOUT ROWID;

INSERT OR IGNORE INTO command_devices (device_id, created_at, command_id)
    SELECT d.value, c.created_at, c.id
    FROM commands c, json_each(c.body, '$.devices') d
    WHERE json_valid(c.body) AND d.type = 'text';
