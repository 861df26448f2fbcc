-- What is missing: contiguous ranges of eligible frames not yet delivered, oldest first.
SELECT from_time, to_time, frames FROM missing_ranges;
