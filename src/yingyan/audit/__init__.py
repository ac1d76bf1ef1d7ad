"""The tamper-evident audit log: `append` a record in the same transaction as the act it
records, page through `entries`, and `verify` the hash chain."""

from yingyan.audit.log import (
    GENESIS_HASH,
    OUTCOMES,
    AuditEntry,
    AuditIntegrityError,
    AuditRecord,
    AuditRecordError,
    VerifyReport,
    append,
    check_record,
    entries,
    entry_hash,
    verify,
)

__all__ = [
    "GENESIS_HASH",
    "OUTCOMES",
    "AuditEntry",
    "AuditIntegrityError",
    "AuditRecord",
    "AuditRecordError",
    "VerifyReport",
    "append",
    "check_record",
    "entries",
    "entry_hash",
    "verify",
]
