"""The audit log, read by auditors: entries page by page, and a verification of the chain.

A key scoped to galleries reads only the entries of its galleries (by identity, see
`access.audit_scope`). It may verify the whole chain: the report names seqs and counts, which
the gaps between the seqs it reads reveal anyway, and nothing of another gallery's entries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from yingyan.access.audit_scope import visible_entries
from yingyan.access.keys import ApiKey
from yingyan.api.schemas import ERROR_RESPONSES, AuditEntryOut, AuditPage, AuditVerifyOut
from yingyan.api.security import require
from yingyan.api.state import AppState, get_state
from yingyan.audit.log import MAX_LIMIT, verify

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], responses=ERROR_RESPONSES)
State = Annotated[AppState, Depends(get_state)]
MAX_SEQ = 2**63 - 1


@router.get("", response_model=AuditPage)
async def list_(
    state: State,
    key: Annotated[ApiKey, Depends(require("audit:read"))],
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="last seq already read")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> AuditPage:
    """Entries oldest first, those of the key's galleries only if it is scoped."""

    def read() -> list[AuditEntryOut]:
        with state.db.read() as session:
            return [
                AuditEntryOut.model_validate(e, from_attributes=True)
                for e in visible_entries(session, key, after=after, limit=limit)
            ]

    items = await run_in_threadpool(read)
    await state.record(key, "audit.read", details={"after": after, "count": len(items)})
    return AuditPage(items=items, next_after=items[-1].seq if len(items) == limit else None)


@router.get("/verify", response_model=AuditVerifyOut)
async def verify_chain(
    state: State, key: Annotated[ApiKey, Depends(require("audit:read"))]
) -> AuditVerifyOut:
    """Recompute the hash chain: any edited, deleted, inserted or reordered entry is named."""

    def check() -> AuditVerifyOut:
        with state.db.session() as session:
            report = verify(session)
        return AuditVerifyOut.model_validate(report, from_attributes=True)

    out = await run_in_threadpool(check)
    await state.record(key, "audit.verify", details={"ok": out.ok})
    return out
