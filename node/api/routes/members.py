"""`/v1/members`: the consortium's members as the registry contract records them."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from node import governance
from node.api.deps import NodeDep

router = APIRouter(prefix="/members", tags=["members"])


class MemberOut(BaseModel):
    member_id: int
    account: str
    role: str
    status: str
    admitted_at: int
    encryption_key: str
    name: str
    bank_code: str


@router.get("", response_model=list[MemberOut])
def list_members(*, node: NodeDep) -> list[MemberOut]:
    """Every member ever admitted, with role and status."""
    return [MemberOut(**m.to_json()) for m in node.registry().members()]


@router.get("/{reference}", response_model=MemberOut)
def read_member(*, reference: str, node: NodeDep) -> MemberOut:
    """One member by id, signing address or bank code."""
    return MemberOut(**governance.find_member(node.registry(), reference).to_json())
