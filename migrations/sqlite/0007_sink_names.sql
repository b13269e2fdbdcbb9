-- The daemon's own sinks are named by what they are, not by the bytes of
-- their command: "daemon on-task", "daemon on-job", "daemon webhook URL".
-- Before, a daemon hook was "all on-task CMD", so that changing CMD (even
-- by a space) made a new sink that replayed every callback. The renamed
-- hook keeps the furthest cursor of its old names.

INSERT INTO sink_cursors (sink, last_id)
    SELECT 'daemon on-task', max(last_id) FROM sink_cursors WHERE sink LIKE 'all on-task %' HAVING count(*) > 0;
INSERT INTO sink_cursors (sink, last_id)
    SELECT 'daemon on-job', max(last_id) FROM sink_cursors WHERE sink LIKE 'all on-job %' HAVING count(*) > 0;
DELETE FROM sink_cursors WHERE sink LIKE 'all on-task %' OR sink LIKE 'all on-job %';
UPDATE sink_cursors SET sink = 'daemon' || substr(sink, 4) WHERE sink LIKE 'all webhook %';

UPDATE OR IGNORE deliveries SET sink = 'daemon on-task' WHERE sink LIKE 'all on-task %';
UPDATE OR IGNORE deliveries SET sink = 'daemon on-job' WHERE sink LIKE 'all on-job %';
UPDATE OR IGNORE deliveries SET sink = 'daemon' || substr(sink, 4) WHERE sink LIKE 'all webhook %';
DELETE FROM deliveries WHERE sink LIKE 'all %';
