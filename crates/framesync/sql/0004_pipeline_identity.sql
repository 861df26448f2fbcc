-- 0004: the pipeline's identity. A ledger belongs to one pipeline, but nothing stopped two
-- configs with different sources from sharing one file: the second then planned only from what
-- the first had delivered, and silently never pulled the rest. The pipeline row now also keeps
-- what makes a pipeline itself, as its config writes it; every command compares its config with
-- it and refuses another pipeline's ledger (`framesync accept-config` records a deliberate
-- change). frames.start and frames.size are the `reference` and `frame_size` columns of 0001.
-- The URLs are the config's text before ${VAR} expansion, so no secret is ever stored.
-- A ledger from before this migration has no identity (identity_at is NULL): the first command
-- that writes records it.

ALTER TABLE pipeline ADD COLUMN source_url         TEXT;     -- source.url, before ${VAR} expansion
ALTER TABLE pipeline ADD COLUMN source_time_format TEXT;     -- source.time_format
ALTER TABLE pipeline ADD COLUMN source_records     TEXT;     -- source.records ('' = the body is the array)
ALTER TABLE pipeline ADD COLUMN source_uid         TEXT;     -- source.uid (a JSON pointer, or 'hash')
ALTER TABLE pipeline ADD COLUMN sink_url           TEXT;     -- sink.url, before ${VAR} expansion
ALTER TABLE pipeline ADD COLUMN identity_at        INTEGER;  -- when the identity was recorded or last accepted
