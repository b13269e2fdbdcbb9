-- The process group of a running exec task, so that the next runner can
-- kill what a dead one left running before the task runs again.
--
--   pgid    the group's id: the pid of the command pcd started
--   pstart  that process's start time, in clock ticks after boot, so that
--           a reused pid is never taken for it

ALTER TABLE running ADD COLUMN pgid INTEGER;
ALTER TABLE running ADD COLUMN pstart INTEGER;
