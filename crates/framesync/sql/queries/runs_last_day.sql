-- Runs of the last 24 hours, newest first.
SELECT id, command, strftime('%Y-%m-%dT%H:%M:%SZ', started_at, 'unixepoch') AS started,
       ended_at - started_at AS seconds, exit_code, frames_pulled, frames_delivered,
       records_pushed, dead_letters, errors, message
FROM runs
WHERE started_at >= unixepoch('now') - 86400
ORDER BY id DESC;
