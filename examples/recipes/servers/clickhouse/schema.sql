-- The SS table (ss.events) and the RS table (rs.events), in one server. Statements end with a
-- line holding only ";" (scripts/recipes sends them one by one over HTTP).
--
-- rs.events is a plain MergeTree so that a record stored twice shows up in the check. A database
-- without keys keeps every insert: where a lookup cannot be had, ReplacingMergeTree ORDER BY uid
-- removes the copies in its background merges (count with FINAL until they ran), e.g.
--   ENGINE = ReplacingMergeTree ORDER BY uid
CREATE DATABASE IF NOT EXISTS ss
;
CREATE DATABASE IF NOT EXISTS rs
;
CREATE TABLE ss.events (
    uid String,
    ts_ms UInt64,
    amount Int64,
    note String
) ENGINE = MergeTree ORDER BY (ts_ms, uid)
;
CREATE TABLE rs.events (
    uid String,
    ts_ms UInt64,
    amount Int64,
    note String
) ENGINE = MergeTree ORDER BY uid
;
