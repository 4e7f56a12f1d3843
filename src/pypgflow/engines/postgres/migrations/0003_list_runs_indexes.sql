-- 0003: runs listed newest first through an index whatever the listing filters on (nothing, a
-- status, a workflow, both: the pair as one key), so that a listing reads as many runs as its
-- limit instead of reading and sorting them all (see list_runs in queries.sql). id breaks the
-- ties of runs started together (one transaction, one created_at), so the indexes of 0001 are
-- rebuilt with it.
DROP INDEX {schema}.runs_status_created;
DROP INDEX {schema}.runs_workflow_created;
CREATE INDEX runs_created ON {schema}.runs (created_at, id);
CREATE INDEX runs_status_created ON {schema}.runs (status, created_at, id);
CREATE INDEX runs_workflow_created ON {schema}.runs (workflow, created_at, id);
CREATE INDEX runs_workflow_status_created
    ON {schema}.runs ((ARRAY[workflow, status]), created_at, id);
