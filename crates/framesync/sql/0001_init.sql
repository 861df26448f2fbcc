-- 0001: the first ledger. Everything framesync knows lives here: which frames were pulled and
-- delivered, the records waiting to be pushed, every acknowledged UID, the dead letters and one
-- row per run. Times are integer seconds since the Unix epoch (UTC) unless a column says ms;
-- the views render them as RFC 3339 text for people.

-- The pipeline this ledger belongs to. The frame size is fixed for the life of a ledger:
-- frames of another size would not line up with the ones already delivered.
CREATE TABLE pipeline (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    frame_size  INTEGER NOT NULL CHECK (frame_size > 0),
    reference   INTEGER NOT NULL,   -- frames.start, aligned down to a frame boundary
    delay       INTEGER NOT NULL,   -- frames.delay in seconds
    updated_at  INTEGER NOT NULL
);

-- One row per frame that was ever attempted. A frame with no row has never been pulled.
--   missing   : a pull was attempted and failed; nothing is staged; retried at next_attempt
--   pulled    : every record of the frame is staged, none sent yet
--   pushing   : records are being sent; acknowledged ones are in `delivered`
--   delivered : every record was acknowledged by the RS or dead-lettered
CREATE TABLE frames (
    start         INTEGER PRIMARY KEY,
    end           INTEGER NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('missing', 'pulled', 'pushing', 'delivered')),
    records       INTEGER NOT NULL DEFAULT 0,  -- records the SS returned on the last pull
    pushed        INTEGER NOT NULL DEFAULT 0,  -- records the RS acknowledged
    dead          INTEGER NOT NULL DEFAULT 0,  -- records dead-lettered
    late          INTEGER NOT NULL DEFAULT 0,  -- new records found by re-checks after delivery
    out_of_frame  INTEGER NOT NULL DEFAULT 0,  -- records stamped outside the frame they came in
    duplicates    INTEGER NOT NULL DEFAULT 0,  -- repeated UIDs within one pull (kept once)
    attempts      INTEGER NOT NULL DEFAULT 0,  -- failed attempts since the last progress
    last_error    TEXT,
    next_attempt  INTEGER,                     -- not before this time; NULL = whenever
    sent_through  INTEGER NOT NULL DEFAULT -1, -- staged records with seq <= this may have reached the RS
    rechecks      INTEGER NOT NULL DEFAULT 0,  -- re-checks done since delivery
    next_recheck  INTEGER,                     -- when the next re-check is due; NULL = none
    pulled_at     INTEGER,
    delivered_at  INTEGER,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX frames_open ON frames (start) WHERE state <> 'delivered';
CREATE INDEX frames_recheck ON frames (next_recheck) WHERE next_recheck IS NOT NULL;

-- Delivered frames as merged [start, end) spans, kept in the transaction that delivers a frame.
-- Planning reads these instead of every frame row, so its cost grows with the number of holes,
-- not with the horizon (a year of 1-minute frames is a single row when nothing is missing).
CREATE TABLE delivered_spans (
    start  INTEGER PRIMARY KEY,
    end    INTEGER NOT NULL UNIQUE CHECK (end > start)
);

-- Pulled records waiting for the RS, as the SS sent them. Deleted in the transaction that
-- marks their frame delivered.
CREATE TABLE staged (
    frame  INTEGER NOT NULL REFERENCES frames (start),
    seq    INTEGER NOT NULL,  -- order within the frame: records are pushed in this order
    uid    TEXT    NOT NULL,
    ts     INTEGER,           -- the record's timestamp in ms, when the source names one
    body   TEXT    NOT NULL,
    PRIMARY KEY (frame, seq)
) WITHOUT ROWID;

-- Every UID the RS acknowledged. A UID is written here only after its acknowledgement, and a
-- UID found here is never sent again.
CREATE TABLE delivered (
    uid    TEXT    PRIMARY KEY,
    frame  INTEGER NOT NULL,
    at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX delivered_by_frame ON delivered (frame);

-- Records that will not be delivered without a person: the RS rejected them for good
-- (reason 'rejected', with its status and an excerpt of its answer) or they failed validation
-- before sending (reason 'invalid').
CREATE TABLE dead_letters (
    id        INTEGER PRIMARY KEY,
    frame     INTEGER NOT NULL,
    uid       TEXT    NOT NULL UNIQUE,
    reason    TEXT    NOT NULL CHECK (reason IN ('rejected', 'invalid')),
    status    INTEGER,
    response  TEXT,
    detail    TEXT    NOT NULL,
    body      TEXT    NOT NULL,
    at        INTEGER NOT NULL
);
CREATE INDEX dead_letters_by_frame ON dead_letters (frame);

-- One row per invocation. A row with no ended_at belongs to a run that is still going or was
-- killed.
CREATE TABLE runs (
    id                INTEGER PRIMARY KEY,
    command           TEXT    NOT NULL,
    pid               INTEGER NOT NULL,
    started_at        INTEGER NOT NULL,
    ended_at          INTEGER,
    frames_pulled     INTEGER NOT NULL DEFAULT 0,
    frames_delivered  INTEGER NOT NULL DEFAULT 0,
    records_pulled    INTEGER NOT NULL DEFAULT 0,
    records_pushed    INTEGER NOT NULL DEFAULT 0,
    dead_letters      INTEGER NOT NULL DEFAULT 0,
    errors            INTEGER NOT NULL DEFAULT 0,
    exit_code         INTEGER,
    message           TEXT
);

-- ---- views for operators ------------------------------------------------------------------

-- The eligible horizon: frames ending at or before `horizon` may be pulled now.
CREATE VIEW horizon AS
SELECT reference,
       frame_size,
       delay,
       unixepoch('now') AS now,
       ((unixepoch('now') - delay) / frame_size) * frame_size AS horizon
FROM pipeline;

-- What is missing: contiguous ranges of eligible frames from the reference time on that are not
-- delivered (never pulled, failing, or still being pushed).
CREATE VIEW missing_ranges AS
WITH h AS (SELECT reference, frame_size, horizon FROM horizon),
spans AS (
    SELECT s.start, s.end FROM delivered_spans s, h
    WHERE s.end > h.reference AND s.start < h.horizon
),
gaps AS (
    SELECT COALESCE(LAG(end) OVER (ORDER BY start), (SELECT reference FROM h)) AS gap_start,
           start AS gap_end
    FROM spans
    UNION ALL
    SELECT COALESCE((SELECT MAX(end) FROM spans), (SELECT reference FROM h)), (SELECT horizon FROM h)
)
SELECT strftime('%Y-%m-%dT%H:%M:%SZ', MAX(gap_start, h.reference), 'unixepoch') AS from_time,
       strftime('%Y-%m-%dT%H:%M:%SZ', MIN(gap_end, h.horizon), 'unixepoch')     AS to_time,
       (MIN(gap_end, h.horizon) - MAX(gap_start, h.reference)) / h.frame_size    AS frames,
       MAX(gap_start, h.reference) AS from_epoch,
       MIN(gap_end, h.horizon)     AS to_epoch
FROM gaps, h
WHERE MIN(gap_end, h.horizon) > MAX(gap_start, h.reference)
ORDER BY from_epoch;

-- How far behind: everything before `complete_until` is delivered.
CREATE VIEW lag AS
SELECT strftime('%Y-%m-%dT%H:%M:%SZ', h.now, 'unixepoch') AS now,
       strftime('%Y-%m-%dT%H:%M:%SZ', h.horizon, 'unixepoch') AS eligible_until,
       strftime('%Y-%m-%dT%H:%M:%SZ', COALESCE(m.first, h.horizon), 'unixepoch') AS complete_until,
       h.now - COALESCE(m.first, h.horizon) AS lag_seconds,
       COALESCE(m.frames, 0) AS missing_frames,
       strftime('%Y-%m-%dT%H:%M:%SZ', (SELECT MAX(end) FROM delivered_spans), 'unixepoch') AS newest_delivered
FROM horizon h
LEFT JOIN (SELECT MIN(from_epoch) AS first, SUM(frames) AS frames FROM missing_ranges) m;

-- Frames by state, with their record counts.
CREATE VIEW frame_summary AS
SELECT state,
       COUNT(*)          AS frames,
       SUM(records)      AS records,
       SUM(pushed)       AS pushed,
       SUM(dead)         AS dead,
       SUM(late)         AS late,
       SUM(attempts > 0) AS failing
FROM frames
GROUP BY state;

-- Frames that failed and are waiting for their next attempt.
CREATE VIEW failing_frames AS
SELECT strftime('%Y-%m-%dT%H:%M:%SZ', start, 'unixepoch') AS frame,
       state,
       attempts,
       last_error,
       strftime('%Y-%m-%dT%H:%M:%SZ', next_attempt, 'unixepoch') AS next_attempt,
       records,
       pushed,
       start
FROM frames
WHERE state <> 'delivered' AND last_error IS NOT NULL
ORDER BY start;

-- The last runs, newest first.
CREATE VIEW recent_runs AS
SELECT id,
       command,
       strftime('%Y-%m-%dT%H:%M:%SZ', started_at, 'unixepoch') AS started,
       ended_at - started_at AS seconds,
       CASE WHEN ended_at IS NULL THEN 'running or killed' ELSE CAST(exit_code AS TEXT) END AS exit_code,
       frames_pulled,
       frames_delivered,
       records_pushed,
       dead_letters,
       errors,
       message
FROM runs
ORDER BY id DESC
LIMIT 100;
