"""The step checks: preflight (GO / NO-GO), the backup and its restore drill, the smoke tests and
acting as a user, the rollback and its proof."""
