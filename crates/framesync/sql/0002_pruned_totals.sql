-- 0002: totals that outlive pruning. `framesync prune` (and every `run`) deletes `runs` rows and
-- `frames` rows older than `run.retain`, but the Prometheus counters built from them (records
-- pushed, late records) must never go down: a counter that drops looks like a restart to
-- Prometheus. What the deleted rows counted is added here in the same transaction that deletes
-- them, and the `totals` view adds it back.

-- One row: what pruning has deleted so far, and what those rows counted.
CREATE TABLE pruned (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    runs            INTEGER NOT NULL DEFAULT 0,  -- `runs` rows deleted
    records_pushed  INTEGER NOT NULL DEFAULT 0,  -- the sum of their runs.records_pushed
    frames          INTEGER NOT NULL DEFAULT 0,  -- `frames` rows deleted
    late            INTEGER NOT NULL DEFAULT 0,  -- the sum of their frames.late
    uids            INTEGER NOT NULL DEFAULT 0,  -- `delivered` rows deleted
    last_at         INTEGER                      -- when pruning last deleted something
);
INSERT INTO pruned (id) VALUES (1);

-- Totals over the life of the ledger, pruned rows included: counters that never go down.
CREATE VIEW totals AS
SELECT p.records_pushed + (SELECT COALESCE(SUM(records_pushed), 0) FROM runs) AS records_pushed,
       p.late + (SELECT COALESCE(SUM(late), 0) FROM frames)                   AS late_records,
       p.runs + (SELECT COUNT(*) FROM runs)                                   AS runs,
       p.uids                                                                  AS uids_pruned,
       p.frames                                                                AS frames_pruned,
       strftime('%Y-%m-%dT%H:%M:%SZ', p.last_at, 'unixepoch')                  AS last_pruned
FROM pruned p;
