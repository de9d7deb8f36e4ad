"""A whole consortium in one process: the same sessions and messages, no gRPC.

Used by the tests, and by anyone prototyping a feature split before deploying
daemons. Data files are read exactly as a party daemon reads them.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fedscore.config import JobSpec
from fedscore.crypto.paillier import PrivateKey, PublicKey
from fedscore.crypto.pool import CryptoPool
from fedscore.model.data import PartyTable, load_party_table
from fedscore.protocol.card_center import CardCenterSession
from fedscore.protocol.coordinator import CoordinatorSession, check_same_ids, new_job_id
from fedscore.protocol.partner import PartnerSession
from fedscore.protocol.training import Progress, TrainingResult, run_training


@dataclass
class Consortium:
    coordinator: CoordinatorSession
    card_center: CardCenterSession
    partners: dict[str, PartnerSession]


def load_tables(spec: JobSpec, base: Path) -> dict[str, PartyTable]:
    return {
        p.name: load_party_table(base / p.data, list(p.id_columns), p.label, party=p.name)
        for p in spec.parties
    }


def build_consortium(
    spec: JobSpec,
    tables: Mapping[str, PartyTable],
    pool: CryptoPool,
    keys: tuple[PublicKey, PrivateKey] | None = None,
) -> Consortium:
    coordinator = CoordinatorSession(new_job_id(spec.name), spec, keys)
    digests = {name: table.id_digest(coordinator.id_nonce) for name, table in tables.items()}
    check_same_ids(spec.card_center.name, {n: t.rows for n, t in tables.items()}, digests)
    partners = {
        p.name: PartnerSession(coordinator.job_id, spec, p.name, tables[p.name], coordinator.public_key, pool)
        for p in spec.partners
    }
    center_spec = spec.card_center
    center = CardCenterSession(
        coordinator.job_id, spec, center_spec.name, tables[center_spec.name], coordinator.public_key, pool,
        partners=partners,
    )
    for session in (center, *partners.values()):
        coordinator.expect_columns(session.party, session.weights.size)
    return Consortium(coordinator, center, partners)


def simulate(
    consortium: Consortium, progress: Callable[[Progress], None] = lambda event: None
) -> TrainingResult:
    center = consortium.card_center
    return run_training(
        consortium.coordinator,
        (center.party, center),
        consortium.partners,
        train_rows=len(center.train_rows),
        total_rows=center.table.rows,
        progress=progress,
    )
