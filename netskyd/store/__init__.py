"""Durable state: named markers, the JSONL journal, and meta.db."""
