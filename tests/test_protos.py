"""The committed gRPC stubs are exactly what tools/gen_protos.py makes from protos/."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools (the dev extra) is not installed")
def test_stubs_match_the_proto(tmp_path):
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "tools" / "gen_protos.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    generated = module.generate(tmp_path)
    assert {p.name for p in generated} == {"fedscore_pb2.py", "fedscore_pb2_grpc.py"}
    for path in generated:
        committed = ROOT / "fedscore" / "proto" / path.name
        assert path.read_text() == committed.read_text(), f"{path.name} drifted: run python tools/gen_protos.py"
