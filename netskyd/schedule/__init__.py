"""Scheduling: cron entries and loops owned by netskyd (docs/schedule.md)."""
