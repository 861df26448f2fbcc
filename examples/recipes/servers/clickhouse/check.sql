-- Checks in the RS's own database, against the SS table as the expected set.
-- Copies of each UID in rs.events (more than 1 = stored twice):
--   SELECT uid, count() AS copies FROM rs.events GROUP BY uid HAVING copies > 1
-- UIDs the SS has and the RS does not:
--   SELECT uid FROM ss.events WHERE uid NOT IN (SELECT uid FROM rs.events)
-- A record counts as missing unless the RS holds it whole: same UID and same fields, so a UID
-- or a note mangled on the way is missing (and its mangled copy is unexpected).
-- report
SELECT
    (SELECT count() FROM ss.events) AS records,
    (SELECT count() FROM ss.events
     WHERE (uid, ts_ms, amount, note) NOT IN (SELECT uid, ts_ms, amount, note FROM rs.events)) AS missing,
    (SELECT count() - uniqExact(uid) FROM rs.events) AS duplicates,
    (SELECT count() FROM rs.events WHERE uid NOT IN (SELECT uid FROM ss.events)) AS unexpected
