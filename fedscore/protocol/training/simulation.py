"""A whole consortium in one process: the same sessions and messages, no gRPC.

Used by the tests, and by anyone prototyping a feature split before deploying
daemons. Data files are read exactly as a party daemon reads them.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fedscore.job import JobSpec
from fedscore.crypto.paillier import PrivateKey, PublicKey
from fedscore.crypto.pool import CryptoPool
from fedscore.model.data import PartyTable, load_party_table
from fedscore.protocol.training.card_center import CardCenterSession
from fedscore.protocol.alignment import Alignment, CardCenterAlignment, PartnerAlignment
from fedscore.protocol.training.coordinator import CoordinatorSession, new_job_id
from fedscore.protocol.training.partner import PartnerSession
from fedscore.protocol.training.driver import Progress, TrainingResult, run_training


@dataclass
class Consortium:
    coordinator: CoordinatorSession
    card_center: CardCenterSession
    partners: dict[str, PartnerSession]
    alignment: Alignment


def load_tables(spec: JobSpec, base: Path) -> dict[str, PartyTable]:
    return {
        p.name: load_party_table(base / p.data, list(p.id_columns), p.label, party=p.name,
                                 lenient=spec.binning.enabled, shown=p.data, memory_mib=0)   # in one process: no daemon's budget
        for p in spec.parties
    }


def build_consortium(
    spec: JobSpec,
    tables: Mapping[str, PartyTable],
    pool: CryptoPool,
    keys: tuple[PublicKey, PrivateKey] | None = None,
    min_batch_rows: int = 0,
) -> Consortium:
    """Align the parties privately, then open every party's session on the aligned rows; every party and the
    coordinator check the job's batches against its columns as a daemon does (``min_batch_rows``: each
    party's own floor, which a deployed party's policy sets)."""
    coordinator = CoordinatorSession(new_job_id(spec.name), spec, keys)
    job_id, key = coordinator.job_id, coordinator.public_key
    center_spec = spec.card_center
    aligners = {p.name: PartnerAlignment(p.name, tables[p.name], job_id, pool) for p in spec.partners}
    center_aligner = CardCenterAlignment(center_spec.name, tables[center_spec.name], job_id, pool)
    alignment = center_aligner.align(aligners, spec.min_overlap)
    partners = {
        name: PartnerSession(job_id, spec, name, tables[name].subset(aligner.rows), key, pool)
        for name, aligner in aligners.items()
    }
    center = CardCenterSession(
        job_id, spec, center_spec.name, tables[center_spec.name].subset(alignment.rows), key, pool,
        partners=partners,
    )
    for session in (center, *partners.values()):
        session.check_batch(min_batch_rows)
        coordinator.expect_columns(session.party, session.weights.size)
    coordinator.check_partner_batches({name: p.weights.size for name, p in partners.items()}, len(center.train_rows))
    return Consortium(coordinator, center, partners, alignment)


def simulate(
    consortium: Consortium, progress: Callable[[Progress], None] = lambda event: None
) -> TrainingResult:
    center = consortium.card_center
    sessions = (center, *consortium.partners.values())
    for session in sessions:
        session.prepare_obfuscators()
    try:
        return run_training(
            consortium.coordinator,
            (center.party, center),
            consortium.partners,
            train_rows=len(center.train_rows),
            total_rows=center.table.rows,
            progress=progress,
        )
    finally:
        for session in sessions:
            session.reserve.stop()
