-- 0006: runs keep the trace context they were started in (runs.trace_context: a W3C trace
-- context carrier as JSON text, NULL when the starting process does not trace), so that the
-- spans of every step, on every worker, join the trace of the request that started the run.
-- SQLite adds the column after the last one, before the table's constraints, as schema.sql
-- has it.
ALTER TABLE runs ADD COLUMN trace_context TEXT;
