-- 0010: how many of a task's lost workers were running it alone (no other task of theirs lost
-- with it): only those losses count toward the poison-pill limit (orchestration.task_lost).
ALTER TABLE tasks ADD COLUMN lone_losses INTEGER NOT NULL DEFAULT 0;
