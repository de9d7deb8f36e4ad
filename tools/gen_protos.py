"""Regenerate the Python gRPC stubs in fedscore/proto from protos/*.proto.

    python tools/gen_protos.py            # rewrite fedscore/proto/
    python tools/gen_protos.py --out DIR  # write elsewhere (the drift test uses this)

Needs the pinned grpcio-tools from the `dev` extra. protoc emits a top-level
`import fedscore_pb2`; it is rewritten to a package-relative import so the stubs
live inside `fedscore.proto`.
"""
from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
DEFAULT_OUT = ROOT / "fedscore" / "proto"


def generate(out_dir: Path) -> list[Path]:
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for proto in sorted(PROTOS.glob("*.proto")):
        with tempfile.TemporaryDirectory() as tmp:
            code = protoc.main(
                ["grpc_tools.protoc", f"-I{PROTOS}", f"--python_out={tmp}",
                 f"--grpc_python_out={tmp}", str(proto)]
            )
            if code != 0:
                raise SystemExit(f"protoc failed on {proto.name} (exit {code})")
            for generated in sorted(Path(tmp).glob("*.py")):
                text = generated.read_text()
                text = re.sub(r"^import (\w+_pb2) as", r"from . import \1 as", text, flags=re.M)
                target = out_dir / generated.name
                target.write_text(text)
                written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path.relative_to(args.out.parent) if path.is_relative_to(args.out.parent) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
