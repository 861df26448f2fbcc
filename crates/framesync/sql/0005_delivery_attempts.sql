-- 0005: what each record's delivery has tried, so that none is doubled and none blocks the rest.
-- * A record is re-sent only under the Idempotency-Key it was first sent under: a batch's key is
--   a hash of its UIDs, so the batch a record was sent in must be remembered, or a regrouped
--   batch would carry a new key and an RS that honors keys would store its records twice.
-- * A record the RS keeps failing while it acknowledges others gets a bounded number of attempts
--   (sink.max_attempts), then is dead-lettered with the reason ('exhausted'); an operator can
--   also dead-letter a staged record by hand ('manual'). Dead letters keep the key, so a retry
--   sends them under it again.
-- * A re-check the SS refuses gets attempts and backoff of its own, and is given up (recorded)
--   after run.max_recheck_attempts, so failing re-checks neither repeat every run nor starve gaps.
-- * Whether the RS's lookup could say "absent" when last asked (a lookup that answers "present"
--   for a UID that cannot exist is not evidence, and lookups are off for that run).

-- NULL: never sent; '': sent under its own UID's key; otherwise the batch key it was sent under.
ALTER TABLE staged ADD COLUMN key TEXT;
-- Failed sends counted against the record (only in runs where the RS acknowledged others).
ALTER TABLE staged ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE staged ADD COLUMN last_error TEXT;
-- 1: its fate at the RS is unknown although this ledger never sent it — it is staged again for a
-- redelivery, or it is stamped before the retention horizon, so a frame since pruned may have
-- delivered it — so it is looked up first where the RS has a lookup.
ALTER TABLE staged ADD COLUMN unknown INTEGER NOT NULL DEFAULT 0;

CREATE TABLE dead_letters_0005 (
    id        INTEGER PRIMARY KEY,
    frame     INTEGER NOT NULL,
    uid       TEXT    NOT NULL UNIQUE,
    -- rejected: the RS refused the record (sink.reject, e.g. 400/422); invalid: it failed
    -- validation and was never sent; exhausted: the RS failed it sink.max_attempts times while
    -- acknowledging others; manual: an operator dead-lettered it (`dead-letters add`).
    reason    TEXT    NOT NULL CHECK (reason IN ('rejected', 'invalid', 'exhausted', 'manual')),
    status    INTEGER,
    response  TEXT,
    detail    TEXT    NOT NULL,
    body      TEXT    NOT NULL,
    at        INTEGER NOT NULL,
    key       TEXT,               -- as staged.key: the key a retry sends it under again
    attempts  INTEGER NOT NULL DEFAULT 0
);
INSERT INTO dead_letters_0005 (id, frame, uid, reason, status, response, detail, body, at)
    SELECT id, frame, uid, reason, status, response, detail, body, at FROM dead_letters;
DROP TABLE dead_letters;
ALTER TABLE dead_letters_0005 RENAME TO dead_letters;
CREATE INDEX dead_letters_by_frame ON dead_letters (frame);

-- Re-checks that failed since the last one that succeeded (their backoff), those of them the SS
-- refused (a 4xx: counted toward the give-up; an SS that is down only delays a re-check), and
-- the last failure.
ALTER TABLE frames ADD COLUMN recheck_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE frames ADD COLUMN recheck_refusals INTEGER NOT NULL DEFAULT 0;
ALTER TABLE frames ADD COLUMN recheck_error TEXT;
-- Re-checks given up after the SS refused them run.max_recheck_attempts times in a row (late
-- records they might have found are not looked for again; recheck_error says why).
ALTER TABLE frames ADD COLUMN rechecks_given_up INTEGER NOT NULL DEFAULT 0;

-- The sink's lookup: when the last run that needed it checked it, and why it was off then
-- (NULL: it answered "absent" for a UID that cannot exist, so it was used).
ALTER TABLE servers ADD COLUMN lookup_checked_at INTEGER;
ALTER TABLE servers ADD COLUMN lookup_off_reason TEXT;
