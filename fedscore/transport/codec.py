"""Protocol values <-> protobuf messages, with every received vector checked.

Big-integer vectors are cut into IntegerBlocks of at most BLOCK_BYTES so a
30 000-row vector of 2048-bit ciphertexts (15 MB) never nears gRPC's message
limit. A receiver checks widths, offsets and totals before allocating, and
checks every ciphertext is a unit modulo n² (0 < c < n², gcd(c, n) = 1).
"""
from __future__ import annotations

import base64
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import asdict, fields

import gmpy2
import numpy as np
from gmpy2 import mpz

from fedscore.crypto.paillier import PublicKey
from fedscore.crypto.pool import pack, unpack
from fedscore.errors import DataError, ProtocolError
from fedscore.job import Binning, JobSpec, PartySpec, Step
from fedscore.ledger.block import Block
from fedscore.ledger.settlement import FeeContract
from fedscore.proto import fedscore_pb2 as pb
from fedscore.job import Step

BLOCK_BYTES = 2 * 1024 * 1024
MAX_VECTOR = 50_000_000


# Every JobSpec field travels but where the submitter reaches the coordinator, which no member needs.
NOT_SENT = frozenset({"coordinator_address"})
_STRUCTURED = {"parties", "fees", "binning", "protected", "calibrate"}
_SCALARS = tuple(f.name for f in fields(JobSpec) if f.name not in {*_STRUCTURED, *NOT_SENT})
# Empty on the wire (never a valid value) means the JobSpec default, as for a sender older than these fields.
_EMPTY_MEANS_DEFAULT = ("rpc_timeout", "restart_timeout", "obfuscation")


def spec_to_proto(spec: JobSpec) -> pb.JobSpec:
    """A new JobSpec field without its proto field fails here, at once, not as a silent default later."""
    return pb.JobSpec(
        **{name: getattr(spec, name) for name in _SCALARS},
        fees=pb.FeeContract(**asdict(spec.fees)),
        binning=spec.binning.to_json(),
        protected=list(spec.protected),
        uncalibrated=not spec.calibrate,
        parties=[
            pb.PartySpec(**{**asdict(p), "id_columns": list(p.id_columns), "label": p.label or ""})
            for p in spec.parties
        ],
    )


def spec_to_text(spec: JobSpec) -> str:
    """A job spec as text, for checkpoints: the same message that travels, base64-encoded."""
    return base64.b64encode(spec_to_proto(spec).SerializeToString()).decode("ascii")


def spec_from_text(text: str) -> JobSpec:
    return spec_from_proto(pb.JobSpec.FromString(base64.b64decode(text)))


def spec_from_proto(message: pb.JobSpec) -> JobSpec:
    settings = {name: getattr(message, name) for name in _SCALARS}
    for name in _EMPTY_MEANS_DEFAULT:
        settings[name] = settings[name] or getattr(JobSpec, name)
    fees = {f.name: getattr(message.fees, f.name) for f in fields(FeeContract)}
    return JobSpec(
        **settings,
        fees=FeeContract(**{**fees, "currency": fees["currency"] or FeeContract.currency}),
        binning=_binning(message.binning),
        protected=tuple(message.protected),
        calibrate=not message.uncalibrated,
        parties=tuple(
            PartySpec(**{
                **{f.name: getattr(p, f.name) for f in fields(PartySpec)},
                "id_columns": tuple(p.id_columns), "label": p.label or None,
            })
            for p in message.parties
        ),
    ).validate()


def _binning(text: str) -> Binning:
    try:
        return Binning.from_json(text)
    except (ValueError, TypeError) as error:
        raise ProtocolError(f"the job's binning settings are not valid: {error}") from None


def score_request(job_id: str, applicant_id: str, features: dict[str, float | str | None], consent: str) -> pb.ScoreRequest:
    """A scoring request: numbers, text (a binned model's categories) and missing values (None) each in their field."""
    numbers = {k: float(v) for k, v in features.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    text = {k: v for k, v in features.items() if isinstance(v, str)}
    missing = [k for k, v in features.items() if v is None]
    return pb.ScoreRequest(job_id=job_id, applicant_id=applicant_id, features=numbers, text_features=text,
                           missing_features=missing, consent=consent)


def request_features(request: pb.ScoreRequest) -> dict[str, float | str | None]:
    """A scoring request's features as the scorer takes them (a missing value is None); a name sent twice
    (as a number and as text, say) is refused, not settled by which field is read last."""
    numbers, text, missing = dict(request.features), dict(request.text_features), list(request.missing_features)
    names = [*numbers, *text, *missing]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DataError(f"the request sends feature {twice[0]!r} more than once (as a number, text or missing)")
    return {**numbers, **text, **{k: None for k in missing}}


def step_to_proto(job_id: str, step: Step) -> pb.StepRef:
    return pb.StepRef(job_id=job_id, epoch=step.epoch, batch=step.batch)


def step_from_proto(message: pb.StepRef) -> Step:
    return Step(message.epoch, message.batch)


def integer_blocks(values: list[mpz], width: int, step: pb.StepRef | None = None) -> Iterator[pb.IntegerBlock]:
    per_block = max(1, BLOCK_BYTES // width)
    total = len(values)
    for offset in range(0, max(total, 1), per_block):
        chunk = values[offset : offset + per_block]
        yield pb.IntegerBlock(step=step, width=width, offset=offset, total=total, data=pack(chunk, width))


def single_block(values: list[mpz], width: int, step: pb.StepRef | None = None) -> pb.IntegerBlock:
    return pb.IntegerBlock(step=step, width=width, offset=0, total=len(values), data=pack(values, width))


def join_integer_blocks(blocks: Iterable[pb.IntegerBlock], width: int) -> tuple[pb.StepRef | None, list[mpz]]:
    """Reassemble a streamed vector, refusing gaps, overlaps, wrong widths and oversize totals."""
    values: list[mpz] = []
    step = None
    total = None
    for block in blocks:
        if block.width != width:
            raise ProtocolError(f"integers of {block.width} bytes where {width} were expected")
        if total is None:
            total, step = block.total, block.step if block.HasField("step") else None
            if total > MAX_VECTOR:
                raise ProtocolError(f"a vector of {total} values is over the limit of {MAX_VECTOR}")
        elif block.total != total:
            raise ProtocolError("blocks of one vector disagree on its length")
        elif (block.step if block.HasField("step") else None) != step:
            raise ProtocolError("blocks of one vector name different steps")
        if block.offset != len(values):
            raise ProtocolError(f"block at offset {block.offset} where {len(values)} was expected")
        try:
            chunk = unpack(block.data, width)
        except ValueError as error:
            raise ProtocolError(str(error)) from None
        if len(values) + len(chunk) > total:
            raise ProtocolError(f"more than the announced {total} values")
        values.extend(chunk)
    if total is None:
        raise ProtocolError("an empty stream where a vector was expected")
    if len(values) != total:
        raise ProtocolError(f"stream ended after {len(values)} of {total} values")
    return step, values


def check_ciphertexts(values: list[mpz], public_key: PublicKey) -> list[mpz]:
    """Every value must be a unit modulo n²; anything else is garbage or an attack.

    Units are checked together: the product modulo n is coprime to n exactly
    when every factor is, so one gcd serves the whole vector.
    """
    n, nsquare = public_key.n, public_key.nsquare
    product = mpz(1)
    for index, c in enumerate(values):
        if not 0 < c < nsquare:
            raise ProtocolError(f"value {index} is not a valid ciphertext for this key (out of range)")
        product = product * (c % n) % n
    if gmpy2.gcd(product, n) != 1:
        bad = next(i for i, c in enumerate(values) if gmpy2.gcd(c, n) != 1)
        raise ProtocolError(f"value {bad} is not a valid ciphertext for this key (shares a factor with n)")
    return values


def check_residues(values: list[mpz], public_key: PublicKey) -> list[mpz]:
    for index, v in enumerate(values):
        if not 0 <= v < public_key.n:
            raise ProtocolError(f"value {index} is not below the modulus")
    return values


def fixed_blocks(data: bytes, width: int, job_id: str) -> Iterator[pb.FixedBlock]:
    """Stream packed fixed-width values (points, positions, words) in blocks of at most BLOCK_BYTES."""
    total = len(data) // width
    per_block = max(1, BLOCK_BYTES // width)
    for offset in range(0, max(total, 1), per_block):
        yield pb.FixedBlock(
            job_id=job_id, width=width, offset=offset, total=total,
            data=data[width * offset : width * (offset + per_block)],
        )


def stream_fixed_blocks(chunks: Iterable[bytes], width: int, total: int, job_id: str) -> Iterator[pb.FixedBlock]:
    """Stream ``total`` fixed-width values arriving in chunks of any size, in blocks of at most BLOCK_BYTES,
    each sent as soon as it is ready."""
    per_block = max(1, BLOCK_BYTES // width) * width
    offset = 0
    for chunk in chunks:
        for start in range(0, len(chunk), per_block):
            data = chunk[start : start + per_block]
            yield pb.FixedBlock(job_id=job_id, width=width, offset=offset, total=total, data=data)
            offset += len(data) // width
    if offset == 0:
        yield pb.FixedBlock(job_id=job_id, width=width, offset=0, total=total, data=b"")


def read_fixed_blocks(blocks: Iterable[pb.FixedBlock], width: int) -> tuple[int, Iterator[bytes]]:
    """(the announced count, each block's data as it arrives) of a FixedBlock stream, refusing wrong widths,
    gaps and oversize totals block by block."""
    blocks = iter(blocks)
    first = next(blocks, None)
    if first is None:
        raise ProtocolError("an empty stream where values were expected")
    if first.width != width:
        raise ProtocolError(f"values of {first.width} bytes where {width} were expected")
    if first.total > MAX_VECTOR:
        raise ProtocolError(f"a vector of {first.total} values is over the limit of {MAX_VECTOR}")
    return first.total, _checked_blocks(itertools.chain([first], blocks), width, first.total)


def _checked_blocks(blocks: Iterator[pb.FixedBlock], width: int, total: int) -> Iterator[bytes]:
    received = 0
    for block in blocks:
        if block.width != width:
            raise ProtocolError(f"values of {block.width} bytes where {width} were expected")
        if block.total != total or block.offset != received or len(block.data) % width:
            raise ProtocolError("malformed block stream (offsets, totals or lengths disagree)")
        received += len(block.data) // width
        if received > total:
            raise ProtocolError(f"more than the announced {total} values")
        yield block.data
    if received != total:
        raise ProtocolError(f"stream ended after {received} of {total} values")


def join_fixed_blocks(blocks: Iterable[pb.FixedBlock], width: int) -> bytes:
    """Reassemble a FixedBlock stream, refusing wrong widths, gaps and oversize totals."""
    return b"".join(read_fixed_blocks(blocks, width)[1])


def words(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


def block_to_proto(job_id: str, block: Block, chain: str = "") -> pb.Block:
    return pb.Block(
        job_id=job_id, height=block.height, previous=block.previous, timestamp_ns=block.timestamp_ns,
        merkle_root=block.merkle_root, entries=list(block.entries), signatures=block.signatures, chain=chain,
    )


def block_from_proto(message: pb.Block) -> Block:
    return Block(
        height=message.height, previous=bytes(message.previous), timestamp_ns=message.timestamp_ns,
        merkle_root=bytes(message.merkle_root), entries=tuple(bytes(e) for e in message.entries),
        signatures={m: bytes(s) for m, s in message.signatures.items()},
    )
