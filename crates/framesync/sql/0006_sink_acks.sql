-- 0006: when the RS last acknowledged a request. A record the RS fails counts against it
-- (toward sink.max_attempts) only while the RS is seen taking other records: in the same run,
-- or, in a quiet feed where the run retrying it sends nothing else, in a run shortly before.
ALTER TABLE servers ADD COLUMN acked_at INTEGER;
