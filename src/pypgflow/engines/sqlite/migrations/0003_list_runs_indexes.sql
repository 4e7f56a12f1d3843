-- 0003: runs listed newest first through an index whatever the listing filters on (nothing, a
-- status, a workflow, both), so that a listing reads as many runs as its limit instead of
-- reading and sorting them all. Every index ends with the rowid, which breaks the ties of runs
-- created in the same millisecond: the indexes of 0001 serve a status or a workflow already.
CREATE INDEX runs_created ON runs (created_at);
CREATE INDEX runs_workflow_status_created ON runs (workflow, status, created_at);
