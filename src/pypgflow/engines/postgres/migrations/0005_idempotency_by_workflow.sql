-- 0005: idempotency keys are scoped to their workflow: the same key may start one run of each
-- workflow, and a start whose key its workflow already holds is compared with that run (see
-- runs_by_idempotency_key). The new index is weaker than the old one: nothing can conflict.
DROP INDEX {schema}.runs_idempotency_key;
CREATE UNIQUE INDEX runs_idempotency_key ON {schema}.runs (workflow, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
