-- Where is a record? Set the UID with: .parameter set :uid 'ev-123'
SELECT 'delivered' AS fate, strftime('%Y-%m-%dT%H:%M:%SZ', frame, 'unixepoch') AS frame,
       strftime('%Y-%m-%dT%H:%M:%SZ', at, 'unixepoch') AS at, NULL AS detail
FROM delivered WHERE uid = :uid
UNION ALL
SELECT 'dead letter', strftime('%Y-%m-%dT%H:%M:%SZ', frame, 'unixepoch'),
       strftime('%Y-%m-%dT%H:%M:%SZ', at, 'unixepoch'), reason || ': ' || detail
FROM dead_letters WHERE uid = :uid
UNION ALL
SELECT 'staged, not yet acknowledged', strftime('%Y-%m-%dT%H:%M:%SZ', frame, 'unixepoch'), NULL, NULL
FROM staged WHERE uid = :uid;
