-- Which devices each gateway command names, so a device's commands are found by index
-- (the device page) rather than by scanning recent commands. Filled by put_command;
-- commands stored before this migration are indexed here from their documents.
-- Mirrors the embedded 0012_command_devices.

CREATE TABLE command_devices (
    device_id  TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    command_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (device_id, created_at, command_id)
);

INSERT INTO command_devices (device_id, created_at, command_id)
    SELECT DISTINCT d.value, c.created_at, c.id
    FROM commands c,
         jsonb_array_elements_text(
             CASE WHEN jsonb_typeof(c.body::jsonb -> 'devices') = 'array'
                  THEN c.body::jsonb -> 'devices' ELSE '[]'::jsonb END) AS d(value)
    ON CONFLICT DO NOTHING;
