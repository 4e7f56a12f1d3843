-- 0008: each instance lists the workflow versions it runs ("name@version"), so that a run
-- whose version no live worker has can say it waits for one (RunInfo.waiting_for_version).
ALTER TABLE instances ADD COLUMN versions TEXT NOT NULL DEFAULT '[]';
