"""Fees: the job's contract, the settlements it implies, their checking and countersigning, and who owes whom.

Amounts are integers in minor units (fen). The card center pays each partner
`per_step` for every training step recorded on the chain and
`per_overlap_row` for every applicant it shares with that partner (one
`settlement` closing the training chain); once the model serves,
`per_request` for every scoring request the partner answered (numbered
`scoring_settlement`s on the model's scoring chain, fedscore.ledger.scoring_rules).
For marketing audiences, the card center pays its partner `per_query` for
every audience query the partner answered, `per_audience_member` for every
member of a campaign's audience the partner materialised, and
`per_conversion` for every application that arrived with a campaign's id
(numbered `audience_settlement`s on the pair's audience chain,
fedscore.ledger.audience_rules).
Anyone holding a replica can recompute a settlement from the chain alone,
which is how every member checks it before countersigning or signing the
block that records it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from fedscore.errors import ConfigError
from fedscore.ledger.block import decode_entry, encode_entry

if TYPE_CHECKING:
    from fedscore.ledger.audience_rules import AudienceSeen
    from fedscore.ledger.scoring_rules import ScoringSeen

SETTLEMENT_DOMAIN = b"fedscore-settlement/1\n"


@dataclass(frozen=True)
class FeeContract:
    currency: str = "CNY"
    per_step: int = 0          # fen per training step, to each partner
    per_overlap_row: int = 0   # fen per applicant the card center shares with the partner
    per_request: int = 0       # fen per scoring request the partner contributed to
    per_query: int = 0         # fen per audience query the partner answered
    per_audience_member: int = 0   # fen per member of a campaign's audience the partner materialised
    per_conversion: int = 0    # fen per application that arrived with a campaign's id

    def to_dict(self) -> dict:
        """Every price, but the audience prices only when set: a contract without them reads (and digests, in a
        job's digest and a chain's genesis) as it did before they existed, so models trained then still serve."""
        document = asdict(self)
        for name in AUDIENCE_PRICES.values():   # added later: left out at 0
            if not document[name]:
                del document[name]
        return document

    @classmethod
    def from_dict(cls, document: dict, where: str = "fees") -> "FeeContract":
        prices = [f.name for f in fields(cls) if f.name != "currency"]
        unknown = set(document) - {"currency", *prices}
        if unknown:
            raise ConfigError(f"{where}: unknown setting {sorted(unknown)[0]!r}")
        contract = cls(**document)
        if not isinstance(contract.currency, str) or not contract.currency:
            raise ConfigError(f"{where}: currency must be a name such as \"CNY\"")
        for name in prices:
            value = getattr(contract, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{where}: {name} must be a whole, non-negative number of minor units (fen)")
        return contract


# -- the bodies a chain implies ------------------------------------------------------------------

def settlement_body(entries: list[dict]) -> dict:
    """The training settlement a job's chain implies (entries of every block, in order)."""
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


def scoring_settlement_body(genesis: dict, seen: ScoringSeen) -> dict:
    """The scoring settlement of the requests since the last one: per_request fen per contribution. The lines
    of partners whose keys this member lacks are left out (a partner computes its own line only)."""
    contract = FeeContract.from_dict(genesis["fees"])
    members = genesis["members"]
    payer = next(n for n, m in sorted(members.items()) if m["role"] == "card_center")
    lines = []
    for payee in sorted(n for n, m in members.items() if m["role"] == "partner"):
        if payee in seen.keys:
            count = seen.unsettled.get(payee, 0)
            lines.append({"payee": payee, "requests": count, "amount": count * contract.per_request})
    return {
        "kind": "scoring_settlement", "job_id": genesis["job_id"], "number": seen.settlements + 1,
        "currency": contract.currency, "payer": payer, "lines": lines, "total": sum(l["amount"] for l in lines),
    }


def scoring_settlement_problem(body: dict, genesis: dict, seen: ScoringSeen) -> str | None:
    """Why this member cannot agree to the scoring settlement ``body`` (None: it agrees): it checks the
    lines it can recompute, and that the others are in place and add up."""
    expected = scoring_settlement_body(genesis, seen)
    partners = sorted(n for n, m in genesis["members"].items() if m["role"] == "partner")
    lines = body.get("lines")
    if not isinstance(lines, list) or [l.get("payee") for l in lines if isinstance(l, dict)] != partners:
        return "the settlement must have one line per partner, in name order"
    if {k: body.get(k) for k in ("kind", "job_id", "number", "currency", "payer")} != {
        k: expected[k] for k in ("kind", "job_id", "number", "currency", "payer")
    } or set(body) != set(expected):
        return "the settlement's job, number, currency or payer is not the chain's"
    for line in expected["lines"]:
        if lines[partners.index(line["payee"])] != line:
            return f"the settlement's line for {line['payee']!r} does not follow from the contract and the requests since the last one"
    amounts = [l.get("amount") for l in lines]
    if not all(isinstance(a, int) and a >= 0 for a in amounts) or body.get("total") != sum(amounts):
        return "the settlement's amounts do not add up"
    return None


AUDIENCE_COUNTS = ("queries", "audience_members", "conversions")
AUDIENCE_PRICES = {"queries": "per_query", "audience_members": "per_audience_member", "conversions": "per_conversion"}


def audience_settlement_body(genesis: dict, seen: AudienceSeen) -> dict:
    """The audience settlement of what the chain billed since the last one: per_query fen per query,
    per_audience_member per member of a campaign's audience, per_conversion per conversion. One line:
    the card center pays its one partner."""
    contract = FeeContract.from_dict(genesis["fees"])
    counts = {name: seen.unsettled[name] for name in AUDIENCE_COUNTS}
    amount = sum(count * getattr(contract, AUDIENCE_PRICES[name]) for name, count in counts.items())
    return {
        "kind": "audience_settlement", "chain_id": genesis["chain_id"], "number": seen.settlements + 1,
        "currency": contract.currency, "payer": genesis["card_center"],
        "lines": [{"payee": genesis["partner"], **counts, "amount": amount}], "total": amount,
    }


def audience_settlement_problem(body: dict, genesis: dict, seen: AudienceSeen) -> str | None:
    """Why this member cannot agree to the audience settlement ``body`` (None: it agrees). Both members can
    recompute all of it from the chain and the contract."""
    expected = audience_settlement_body(genesis, seen)
    head = ("kind", "chain_id", "number", "currency", "payer")
    if set(body) != set(expected) or {k: body.get(k) for k in head} != {k: expected[k] for k in head}:
        return "the settlement's chain, number, currency or payer is not the chain's"
    lines = body.get("lines")
    if not isinstance(lines, list) or [l.get("payee") if isinstance(l, dict) else None for l in lines] != [genesis["partner"]]:
        return f"the settlement must have one line, for the partner {genesis['partner']!r}"
    if lines != expected["lines"]:
        return (f"the settlement's line for {genesis['partner']!r} does not follow from the contract and the queries, "
                "audience members and conversions since the last one")
    if body.get("total") != expected["total"]:
        return "the settlement's amounts do not add up"
    return None


# -- signatures ------------------------------------------------------------------------------------

def settlement_message(body: dict) -> bytes:
    """What payer and payees sign: a domain tag, then the canonical body (never a block hash)."""
    return SETTLEMENT_DOMAIN + encode_entry(body)


def signers(body: dict) -> list[str]:
    """Who must sign a settlement: its payer, then every payee."""
    return [body["payer"], *(line["payee"] for line in body["lines"])]


def signature_valid(body: dict, signature: bytes, public_key: bytes) -> bool:
    try:
        VerifyKey(public_key).verify(settlement_message(body), signature)
        return True
    except (BadSignatureError, ValueError, TypeError):
        return False


def signature_problem(entry: dict, members: dict[str, dict]) -> str | None:
    """Why a settlement entry is not signed by everyone it names (None: it is). ``members``: the genesis' table."""
    body = {k: v for k, v in entry.items() if k != "signatures"}
    signatures = entry.get("signatures", {})
    for signer in signers(body):
        try:
            valid = signature_valid(body, bytes.fromhex(signatures.get(signer, "")), bytes.fromhex(members[signer]["key"]))
        except (KeyError, ValueError, TypeError, AttributeError):   # an unknown signer, or no hex where hex belongs
            valid = False
        if not valid:
            return f"the settlement lacks a valid signature from {signer!r}"
    return None


# -- countersigning: a member signs only what follows from its own replica ---------------------------

def training_refusal(body: bytes, entries: list[dict]) -> str | None:
    """Why a member holding ``entries`` will not countersign the training settlement ``body`` (None: it will)."""
    try:
        decode_entry(body)
    except ValueError:
        return "the settlement to sign is not JSON"
    if not entries:
        return "refuses to sign a settlement: its replica holds no chain yet"
    if body != encode_entry(settlement_body(entries)):
        return ("refuses to sign a settlement that does not follow from its own replica "
                "(fee contract, recorded steps and overlaps)")
    return None


def scoring_refusal(body: bytes, genesis: dict, seen: ScoringSeen) -> str | None:
    """Why a member will not countersign the scoring settlement ``body`` (None: it will)."""
    return _refusal(body, "scoring", lambda document: scoring_settlement_problem(document, genesis, seen))


def audience_refusal(body: bytes, genesis: dict, seen: AudienceSeen) -> str | None:
    """Why a member will not countersign the audience settlement ``body`` (None: it will)."""
    return _refusal(body, "audience", lambda document: audience_settlement_problem(document, genesis, seen))


def _refusal(body: bytes, chain: str, problem_of) -> str | None:
    """A settlement body read and judged by ``problem_of``: it must be a canonical JSON object it finds no fault in."""
    try:
        document = decode_entry(body)
        problem = problem_of(document) if isinstance(document, dict) else "not an object"
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        problem = f"it is not readable ({type(error).__name__})"
    if problem or encode_entry(document) != body:
        return f"refuses to sign the {chain} settlement: {problem or 'not canonical JSON'}"
    return None


def countersign(key: SigningKey, body: bytes) -> bytes:
    """A member's signature on a canonical settlement body it checked."""
    return key.sign(settlement_message(decode_entry(body))).signature


# -- balances ----------------------------------------------------------------------------------------

def balances(entries: list[dict]) -> dict[str, dict[str, int]]:
    """{member: {"owes": fen, "owed": fen}} over every settlement on the chain: a job's training
    settlement once per job, and each numbered scoring or audience settlement once."""
    result: dict[str, dict[str, int]] = {}
    settled: set[tuple] = set()
    for entry in entries:
        kind = entry.get("kind")
        if kind not in ("settlement", "scoring_settlement", "audience_settlement"):
            continue
        key = (kind, entry.get("job_id"), entry.get("chain_id"), entry.get("number"))
        if key in settled:
            continue
        settled.add(key)
        payer = result.setdefault(entry["payer"], {"owes": 0, "owed": 0})
        for line in entry["lines"]:
            payer["owes"] += line["amount"]
            result.setdefault(line["payee"], {"owes": 0, "owed": 0})["owed"] += line["amount"]
    return result
