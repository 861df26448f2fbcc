-- 0003: late data and the servers' state across runs.
-- Re-checks (frames.recheck) pull delivered frames again and push records the ledger has not
-- seen; each such late record is kept with when its frame was first pulled (it was not there
-- yet) and when a re-check found it, so `status` can say how late the SS really is and which
-- `delay` would have caught them the first time.
-- A server that asked for quiet (429/503 with Retry-After) is remembered, so the next cron run
-- sends it nothing until then; the SS's clock skew (from its Date header) is kept for `status`.

CREATE TABLE late_records (
    uid              TEXT    PRIMARY KEY,
    frame            INTEGER NOT NULL,
    ts               INTEGER,           -- the record's timestamp in ms, when the source names one
    first_pulled_at  INTEGER NOT NULL,  -- the frame's first pull, which did not see the record
    found_at         INTEGER NOT NULL   -- the re-check that found it
) WITHOUT ROWID;
CREATE INDEX late_records_by_found_at ON late_records (found_at);

CREATE TABLE servers (
    name          TEXT    PRIMARY KEY CHECK (name IN ('source', 'sink')),
    quiet_until   INTEGER,   -- no request to this server before this time
    quiet_reason  TEXT,
    clock_skew    INTEGER,   -- the server's Date minus this machine's clock, in seconds
    skew_at       INTEGER,
    updated_at    INTEGER NOT NULL
);

-- Late records by the hour they were found: how many, and how long after their frame closed.
CREATE VIEW late_by_hour AS
SELECT strftime('%Y-%m-%dT%H:00:00Z', l.found_at, 'unixepoch') AS hour,
       COUNT(*)                                               AS late_records,
       MAX(l.found_at - (l.frame + p.frame_size))             AS max_seconds_after_frame_end,
       MAX(l.first_pulled_at - (l.frame + p.frame_size))      AS first_pull_seconds_after_frame_end
FROM late_records l, pipeline p
GROUP BY 1
ORDER BY 1 DESC;
