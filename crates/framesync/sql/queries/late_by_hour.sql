-- Late data by hour, the last 7 days: for the frames of each hour, the records their pulls
-- returned, how many of them re-checks found only after the frame was first delivered, and
-- that share. (The `late_by_hour` view groups late records by the hour a re-check found them,
-- with how long after their frame closed.)
SELECT strftime('%Y-%m-%dT%H:00:00Z', start, 'unixepoch') AS hour,
       COUNT(*)                                            AS frames,
       SUM(records)                                        AS records,
       SUM(late)                                           AS late_records,
       ROUND(100.0 * SUM(late) / MAX(SUM(records), 1), 2)  AS late_percent,
       SUM(rechecks)                                       AS rechecks,
       MAX(delivered_at - end)                             AS max_seconds_to_first_delivery
FROM frames
WHERE start >= unixepoch('now') - 7 * 86400
GROUP BY 1
ORDER BY 1 DESC;
