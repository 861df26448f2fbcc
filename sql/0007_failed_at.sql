-- 0007: when each staged record last failed at the RS. A record the RS fails while this run
-- sends nothing else counts against it (toward sink.max_attempts) only if the RS acknowledged
-- another request since the record's previous failure: the RS was seen taking others between
-- two failures of this one. A failure alone proves nothing, so an RS that goes down after its
-- last acknowledgement blames no record however many runs retry it (0006's rule, "others
-- within the 15 minutes before", blamed every retry in that window).
ALTER TABLE staged ADD COLUMN failed_at INTEGER;
