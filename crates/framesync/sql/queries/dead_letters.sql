-- Dead letters, newest first: what was refused, why, and the RS's answer.
SELECT id, uid, strftime('%Y-%m-%dT%H:%M:%SZ', frame, 'unixepoch') AS frame, reason, status,
       detail, response, strftime('%Y-%m-%dT%H:%M:%SZ', at, 'unixepoch') AS at
FROM dead_letters
ORDER BY id DESC;
