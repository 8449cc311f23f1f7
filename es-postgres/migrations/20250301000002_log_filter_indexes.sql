-- es-postgres schema, version 3: indexes behind the filtered read of the global log.
--
-- `es_read_log` reads a filtered page through one of these per aggregate type or event name,
-- in position order, so a consumer of a few event kinds reads only what it takes.
CREATE INDEX events_type_position_idx ON events (aggregate_type, position);
CREATE INDEX events_name_position_idx ON events (event_name, position);
