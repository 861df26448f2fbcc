-- @N@ records with distinct UIDs, stamped evenly over [@START_MS@, @START_MS@ + @SPAN_MS@) ms.
-- The UIDs carry what a query encoding must survive: quotes, backslashes, %, newlines, tabs,
-- carriage returns, unicode, spaces, URL and template syntax, and SQL that would end the literal.
-- Each is followed by "#" and the record's number, which makes it unique.
INSERT INTO ss.events
SELECT
    concat(arrayElement([
        'plain',
        'it''s',
        'double "quoted"',
        'back\\slash',
        'trailing backslash\\',
        '100%',
        '%41%0A%',
        'new\nline',
        'tab\there',
        'carriage\rreturn',
        'ünïcødé ☃ 日本語',
        'with space',
        '?a=1&b=2#frag',
        '{uid} {from} {to}',
        '\'); DROP TABLE rs.events; --',
        '\' OR \'1\'=\'1'
    ], (number % 16) + 1), '#', toString(number)) AS uid,
    @START_MS@ + intDiv(number * @SPAN_MS@, @N@) AS ts_ms,
    toInt64(number * 7 % 1000) - 500 AS amount,
    concat('note ', toString(number)) AS note
FROM system.numbers
LIMIT @N@
;
