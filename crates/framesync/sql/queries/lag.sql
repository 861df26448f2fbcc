-- How far behind: everything before complete_until is delivered.
SELECT now, complete_until, lag_seconds, missing_frames, newest_delivered FROM lag;
