-- 0008: whether a frame's last failed pull was refused by the SS (a 4xx other than 408, 425 and
-- 429: history it no longer keeps, a request it will not serve) rather than failed for a
-- passing reason (an outage, a busy SS, a reset, a broken page). Old frames that failed are
-- retried those that failed for a passing reason first, each in the order its retry came due,
-- and refused ones after them. Until now they were retried fewest failures first, so a frame
-- that failed twice in an outage waited behind every frame refused once — and a backlog of
-- history the SS had dropped refused a new one every run, until the SS dropped that frame too.

ALTER TABLE frames ADD COLUMN refused INTEGER NOT NULL DEFAULT 0 CHECK (refused IN (0, 1));
