-- "Delivered" meant two things: the runner releasing a callback to its own
-- output (this cursor), and a sink delivering it (the deliveries table).
-- The cursor is now "released".
ALTER TABLE jobs RENAME COLUMN delivered_id TO released_id;
