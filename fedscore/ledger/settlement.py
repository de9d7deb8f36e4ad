"""Fees: the job's contract, the settlement it implies, and who owes whom.

Amounts are integers in minor units (fen). The card center pays each partner
`per_step` for every training step recorded on the chain and
`per_overlap_row` for every applicant it shares with that partner; once the
model serves, `per_request` for every scoring request the partner answered
(settled on the model's scoring chain, fedscore.ledger.scoring). Anyone
holding a replica can recompute the settlement from the chain alone, which
is how every member checks it before signing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from fedscore.errors import ConfigError


@dataclass(frozen=True)
class FeeContract:
    currency: str = "CNY"
    per_step: int = 0          # fen per training step, to each partner
    per_overlap_row: int = 0   # fen per applicant the card center shares with the partner
    per_request: int = 0       # fen per scoring request the partner contributed to

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, document: dict, where: str = "fees") -> "FeeContract":
        unknown = set(document) - {"currency", "per_step", "per_overlap_row", "per_request"}
        if unknown:
            raise ConfigError(f"{where}: unknown setting {sorted(unknown)[0]!r}")
        contract = cls(**document)
        if not isinstance(contract.currency, str) or not contract.currency:
            raise ConfigError(f"{where}: currency must be a name such as \"CNY\"")
        for name in ("per_step", "per_overlap_row", "per_request"):
            value = getattr(contract, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{where}: {name} must be a whole, non-negative number of minor units (fen)")
        return contract


def settlement_body(entries: list[dict]) -> dict:
    """The settlement a chain's entries imply (entries of every block, in order)."""
    start = entries[0]
    contract = FeeContract.from_dict(start["fees"])
    roles = {name: info["role"] for name, info in start["members"].items()}
    payers = [name for name, role in roles.items() if role == "card_center"]
    if len(payers) != 1:
        raise ValueError(f"the job start names {len(payers)} card centers; a settlement needs exactly one payer")
    payer = payers[0]
    steps = sum(1 for e in entries if e.get("kind") == "step")
    overlaps = next((e["overlaps"] for e in entries if e.get("kind") == "alignment"), {})
    lines = []
    for payee in sorted(name for name, role in roles.items() if role == "partner"):
        shared = int(overlaps.get(payee, 0))
        lines.append({
            "payee": payee, "steps": steps, "overlap_rows": shared,
            "amount": steps * contract.per_step + shared * contract.per_overlap_row,
        })
    return {
        "kind": "settlement", "job_id": start["job_id"], "currency": contract.currency, "payer": payer,
        "lines": lines, "total": sum(line["amount"] for line in lines),
    }


SETTLEMENT_DOMAIN = b"fedscore-settlement/1\n"


def settlement_message(body: dict) -> bytes:
    """What payer and payees sign: a domain tag, then the canonical body (never a block hash)."""
    from fedscore.ledger.block import encode_entry

    return SETTLEMENT_DOMAIN + encode_entry(body)


def balances(entries: list[dict]) -> dict[str, dict[str, int]]:
    """{member: {"owes": fen, "owed": fen}} over every settlement on the chain: a job's training
    settlement once per job, and each numbered scoring settlement once."""
    result: dict[str, dict[str, int]] = {}
    settled: set[tuple] = set()
    for entry in entries:
        kind = entry.get("kind")
        if kind not in ("settlement", "scoring_settlement"):
            continue
        key = (kind, entry.get("job_id"), entry.get("number"))
        if key in settled:
            continue
        settled.add(key)
        payer = result.setdefault(entry["payer"], {"owes": 0, "owed": 0})
        for line in entry["lines"]:
            payer["owes"] += line["amount"]
            result.setdefault(line["payee"], {"owes": 0, "owed": 0})["owed"] += line["amount"]
    return result
