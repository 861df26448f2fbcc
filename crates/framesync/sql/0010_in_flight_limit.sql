-- 0010: the push's in-flight limit where the last push left it. With `sink.adaptive` a run starts
-- from it rather than from one request, so a pipeline run every minute does not climb back from
-- one each time; `status` and the metrics show it. NULL until a push has sent a request.

ALTER TABLE servers ADD COLUMN in_flight_limit INTEGER CHECK (in_flight_limit >= 1);
