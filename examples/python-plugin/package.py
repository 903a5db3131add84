"""Builds the pyjobs package directory integrationd installs from: `plugin.toml` beside
`pyjobs.pyz`, one executable zip of `pyjobs.py` and the protocol stubs that
grpcio-tools generates from `plugin-protocol/proto` (so the daemon's checksum covers all
of the plugin's own code; grpcio itself is a dependency of the interpreter, like a
shared library). Prints the executable's SHA-256 for `integrationctl plugins trust`.

    python3 examples/python-plugin/package.py --out DIR [--python INTERPRETER]

The interpreter (default: this one) must have grpcio and grpcio-health-checking.
"""

import argparse
import hashlib
import pathlib
import shutil
import sys
import tempfile
import zipapp

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "plugin-protocol" / "proto"
PROTO = "betalogs/plugin/v1/plugin.proto"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path, help="the package directory")
    parser.add_argument("--python", default=sys.executable, help="the interpreter it runs with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as staging:
        staging = pathlib.Path(staging)
        # `python -m grpc_tools.protoc`, as a call: the stubs land in betalogs/plugin/v1/.
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"--python_out={staging}",
                f"--grpc_python_out={staging}",
                PROTO,
            ]
        )
        if status != 0:
            sys.exit(f"protoc failed on {PROTO_ROOT / PROTO} ({status})")
        for package in ("betalogs", "betalogs/plugin", "betalogs/plugin/v1"):
            (staging / package / "__init__.py").touch()
        shutil.copy(HERE / "pyjobs.py", staging / "__main__.py")
        args.out.mkdir(parents=True, exist_ok=True)
        executable = args.out / "pyjobs.pyz"
        zipapp.create_archive(staging, executable, interpreter=args.python)
    executable.chmod(0o755)
    shutil.copy(HERE / "plugin.toml", args.out / "plugin.toml")
    print(hashlib.sha256(executable.read_bytes()).hexdigest())


if __name__ == "__main__":
    main()
