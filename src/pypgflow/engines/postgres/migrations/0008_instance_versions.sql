-- 0008: each instance lists the workflow versions it runs ("name@version"), so that a run
-- whose version no live worker has can say it waits for one (RunInfo.waiting_for_version).
ALTER TABLE {schema}.instances ADD COLUMN versions jsonb NOT NULL DEFAULT '[]'::jsonb;
