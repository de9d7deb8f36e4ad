"""Privacy on the wire: every byte the daemons exchange in alignment, training and scoring, recorded by
TCP proxies between them, holds none of a party's raw ids, feature values or labels. Audience queries are
watched the same way, with these proxies and this detector, in tests/test_audience_daemons.py (a partner's
users, those the card center never saw included)."""
from __future__ import annotations

import socket
import struct
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nacl.signing import SigningKey

from fedscore.job_file import ScoringSettings, load_job
from fedscore.daemons.launcher import LocalConsortium
from fedscore.protocol.scoring.consent import certify_applicant, give_consent
from fedscore.cli.runner import submit
from fedscore.transport.clients.scoring import ScoringClient

from conftest import write_job
from faults import count as tally

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Proxy:
    """Forwards one daemon's port, keeping what each side sent, per connection."""

    def __init__(self, upstream: str):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.captured: list[tuple[bytearray, bytearray]] = []   # (client -> daemon, daemon -> client)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:   # the daemon is down (a test stopped it): this caller sees a closed connection
                client.close()
                continue
            sent = (bytearray(), bytearray())
            self.captured.append(sent)
            for source, sink, buffer in ((client, server, sent[0]), (server, client, sent[1])):
                threading.Thread(target=self._pump, args=(source, sink, buffer), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, buffer: bytearray) -> None:
        try:
            while chunk := source.recv(65536):
                buffer.extend(chunk)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def messages(stream: bytes) -> list[bytes]:
    """The HTTP/2 DATA payloads of one direction of a connection, joined per stream (the gRPC messages
    whole, so a value split across two frames is still found)."""
    if stream.startswith(PREFACE):
        stream = stream[len(PREFACE):]
    streams: dict[int, bytearray] = {}
    at = 0
    while at + 9 <= len(stream):
        length = int.from_bytes(stream[at:at + 3], "big")
        kind, flags = stream[at + 3], stream[at + 4]
        stream_id = int.from_bytes(stream[at + 5:at + 9], "big") & 0x7FFFFFFF
        payload = stream[at + 9:at + 9 + length]
        if kind == 0:  # DATA
            if flags & 0x8:
                payload = payload[1:len(payload) - payload[0]]
            streams.setdefault(stream_id, bytearray()).extend(payload)
        at += 9 + length
    return [bytes(s) for s in streams.values()] + [stream]   # the raw bytes too (headers, metadata)


def party_data(folder: Path, rng: np.random.Generator) -> dict[str, pd.DataFrame]:
    """Three parties with ids, values and labels that cannot turn up on the wire by chance."""
    people = [f"cust-{rng.integers(16**10):010x}" for _ in range(900)]
    frames = {}
    for name, columns, share in [("center", 4, 1.0), ("bureau", 5, 0.85), ("shop", 3, 0.8)]:
        held = [p for p in people if rng.random() < share]
        frame = pd.DataFrame({"id": held})
        for j in range(columns):
            frame[f"{name}_{j}"] = np.round(rng.normal(50, 20, len(held)), 6) + 1e-6 * rng.integers(1, 999, len(held))
        if name == "center":
            frame["y"] = (rng.random(len(held)) < 0.3).astype(int)
        frame.to_csv(folder / f"{name}.csv", index=False)
        frames[name] = frame
    return frames


def leaks(traffic: list[bytes], frame: pd.DataFrame, label: str | None = None) -> tuple[int, list[str]]:
    """(needles looked for, descriptions of those found) for one party's raw data in the traffic."""
    needles: list[tuple[bytes, str]] = []
    for applicant in frame["id"]:
        needles += [(applicant.encode(), f"id {applicant}"), (applicant.upper().encode(), f"id {applicant}")]
    for column in [c for c in frame.columns if c not in ("id", label)]:
        for value in frame[column]:
            needles += [(struct.pack("<d", value), f"{column}={value} as float64"),
                        (struct.pack(">d", value), f"{column}={value} as float64"),
                        (repr(float(value)).encode(), f"{column}={value} as text")]
    if label is not None:
        y = frame[label].to_numpy()
        for order in (y, y[np.argsort(frame["id"].to_numpy())]):
            for start in range(0, len(order) - 64, 64):
                window = order[start:start + 64]
                needles += [(window.astype(np.int8).tobytes(), "labels as bytes"),
                            (window.astype("<f8").tobytes(), "labels as float64"),
                            (",".join(map(str, window)).encode(), "labels as text")]
    found = [what for needle, what in needles if any(needle in message for message in traffic)]
    return len(needles), found


@pytest.mark.slow
def test_no_raw_id_value_or_label_crosses_the_wire_in_alignment_training_or_scoring(tmp_path):
    frames = party_data(tmp_path, np.random.default_rng(11))
    issuer = SigningKey.generate()
    job = write_job(tmp_path, [
        {"name": "center", "data": "center.csv", "id": "id", "label": "y"},
        {"name": "bureau", "data": "bureau.csv", "id": "id"},
        {"name": "shop", "data": "shop.csv", "id": "id"},
    ], epochs=2, batch_size=300, validation=0.2, min_overlap=50)
    spec, base = load_job(job)
    # plaintext on purpose: the proxies read what each protocol message carries, which TLS would hide from them
    with LocalConsortium(spec, base, tmp_path / "state", 1, (bytes(issuer.verify_key).hex(),), insecure=True) as consortium:
        proxies = {p.name: Proxy(p.address) for p in consortium.spec.parties}
        watched = replace(consortium.spec, parties=tuple(replace(p, address=proxies[p.name].address) for p in consortium.spec.parties))
        report = submit(watched, consortium.coordinator_address, lambda event: None)
        assert report["aligned_rows"] > 500

        # scoring: the card center's approval system is inside its boundary, so it calls the card center
        # directly; what the card center and the partners then exchange goes through the proxies
        settings = ScoringSettings(consent_issuers=(bytes(issuer.verify_key).hex(),))
        client = ScoringClient(consortium.spec.card_center.address, consortium.spec.card_center.name)
        opened = client.open_scoring(watched, settings.to_json())
        center = frames["center"]
        for row in center.head(40).itertuples(index=False):
            key = SigningKey.generate()
            token = give_consent(key, certify_applicant(issuer, row.id, bytes(key.verify_key)),
                                 bytes(issuer.verify_key), row.id, "center").to_text()
            features = {c: float(getattr(row, c)) for c in opened.features}
            reply = client.score(row.id, features, token, opened.job_id)
            assert reply.partners_missing == [] or set(reply.partners_missing) <= {"bureau", "shop"}
        client.settle(opened.job_id)
        client.close_scoring(opened.job_id)
        client.close()
        for proxy in proxies.values():
            proxy.close()

    traffic = [m for proxy in proxies.values() for pair in proxy.captured for direction in pair for m in messages(bytes(direction))]
    assert sum(len(m) for m in traffic) > 1_000_000   # alignment, training and scoring all went through
    looked = 0
    for name, frame in frames.items():
        needles, found = leaks(traffic, frame, "y" if name == "center" else None)
        looked += needles
        tally("leaks found", len(found))
        assert found == [], f"{name}: {found[:5]}"
    tally("leak needles looked for", looked)
    assert looked > 20_000


def test_the_detector_finds_what_it_looks_for_even_split_across_frames():
    frame = pd.DataFrame({"id": ["cust-00000000aa"], "x": [12.3456789], "y": [1]})
    needle = b"\x00\x00\x00\x00\x10" + struct.pack("<d", 12.3456789) + b"cust-00000000aa"
    half = len(needle) // 2

    def data_frame(payload: bytes, stream_id: int = 1) -> bytes:
        return len(payload).to_bytes(3, "big") + b"\x00\x00" + stream_id.to_bytes(4, "big") + payload

    wire = PREFACE + data_frame(needle[:half]) + data_frame(b"other stream", 3) + data_frame(needle[half:])
    count, found = leaks(messages(wire), frame)
    assert count > 0 and "id cust-00000000aa" in found and any("as float64" in f for f in found)
