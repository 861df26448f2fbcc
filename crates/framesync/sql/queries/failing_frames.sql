-- Frames that failed and wait for their next attempt, with the error.
SELECT frame, state, attempts, next_attempt, last_error FROM failing_frames;
