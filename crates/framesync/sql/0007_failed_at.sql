-- 0007: what says a record, not the RS, is at fault when the RS fails it while taking fewer
-- requests than it fails (a quiet feed, or several such records tried in one run). A failure
-- of a record that failed before counts against it (toward sink.max_attempts) only if, since
-- its previous failure, the RS acknowledged another request, failed nothing sent for the first
-- time and took nothing it had failed before: it takes what is new and keeps failing the same
-- records. A first failure alone proves nothing, so an RS that goes down after its last
-- acknowledgement blames no record however many runs retry it, and one that fails at random
-- (newcomers fail, retries pass) blames none either. (0006's rule, "others within the 15
-- minutes before", blamed every retry in that window.)

-- When the record's last send failed, counted against it or not.
ALTER TABLE staged ADD COLUMN failed_at INTEGER;
-- When the RS last failed a unit sent for the first time.
ALTER TABLE servers ADD COLUMN newcomer_failed_at INTEGER;
-- When the RS last acknowledged a unit it had failed before.
ALTER TABLE servers ADD COLUMN recovered_at INTEGER;
