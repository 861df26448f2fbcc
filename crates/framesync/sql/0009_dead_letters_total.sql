-- 0009: a count of dead letters that never goes down. `framesync_dead_letters` is a gauge of the
-- dead letters waiting now: `dead-letters retry` and `drop` lower it, so Prometheus' increase()
-- on it misses dead letters written between two scrapes and reads a drop as a reset. A trigger
-- counts every dead letter written, by a run or by hand, and nothing deletes from the count.
-- A ledger from before starts from what it still knows: its dead letters, or the records its
-- frames counted as dead-lettered (dropped ones included), whichever is more.

CREATE TABLE dead_letters_written (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    total  INTEGER NOT NULL  -- dead letters ever written; a record dead-lettered again counts again
);
INSERT INTO dead_letters_written (id, total)
SELECT 1, MAX((SELECT COUNT(*) FROM dead_letters), (SELECT COALESCE(SUM(dead), 0) FROM frames));

CREATE TRIGGER dead_letters_written_count AFTER INSERT ON dead_letters
BEGIN
    UPDATE dead_letters_written SET total = total + 1 WHERE id = 1;
END;
