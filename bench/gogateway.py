"""grpc-gateway (Go) as a row of the benchmark: built from our protos at bench time, then started.

    python -m bench.gogateway build     build (or find built) and print the binary's path
    python -m bench.gogateway tidy      refresh bench/grpcgateway/go.mod and go.sum (go mod tidy)

bench/grpcgateway/ holds what is committed: `main.go` (grpc-gateway v2's `runtime.ServeMux` in front
of one gRPC backend) and its `go.mod` and `go.sum`. Everything else is made here, under
build/grpcgateway/, never committed and never written into our protos:

1. the protoc plugins, `go install`ed at pinned versions into `plugins/<versions>/`: protoc-gen-go
   and protoc-gen-grpc-gateway at the versions go.mod requires of their runtime libraries (the
   generated code and the library it calls must agree), protoc-gen-go-grpc at its own pin;
2. the Go code of our protos (protos/ and build/googleapis, the same inputs as `make protos`),
   their Go package named by `M` options on the command line, next to a copy of main.go, go.mod
   and go.sum;
3. `go build` of that copy into `<key>/grpc-gateway-bench`.

`<key>` hashes every input (the Go files, the protos, the plugin pins, the Go and protoc versions and
this file), so a second run finds the binary and builds nothing; a changed proto builds afresh.
The Go module cache and build cache are Go's own (shared with ghz's `go install`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.processes import REPO, ServerProcess
from bench.tools import INSTALL_TIMEOUT_S, ToolMissing

GO_SOURCE = REPO / "bench" / "grpcgateway"
GO_FILES = ("main.go", "go.mod", "go.sum")
BUILD_ROOT = REPO / "build" / "grpcgateway"
PROTO_ROOT = REPO / "protos"
BINARY_NAME = "grpc-gateway-bench"
# main.go imports the generated code from here: the module of go.mod, then the package's folder.
GO_MODULE = "hypertrackbench"
GENERATED_PACKAGE = f"{GO_MODULE}/gen/ordersv1"
# google/api/*.proto are compiled into genproto's package, which grpc-gateway depends on already.
GOOGLEAPIS_PACKAGE = "google.golang.org/genproto/googleapis/api/annotations"
# protoc-gen-go-grpc is a module of its own; the other two plugins follow go.mod (see `_plugins`).
PROTOC_GEN_GO_GRPC = "google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2"
GATEWAY_MODULE = "github.com/grpc-ecosystem/grpc-gateway/v2"
PLUGIN_OF_MODULE = {
    "google.golang.org/protobuf": "google.golang.org/protobuf/cmd/protoc-gen-go",
    GATEWAY_MODULE: f"{GATEWAY_MODULE}/protoc-gen-grpc-gateway",
}
# The generators, by the flag prefix protoc gives them (--go_out, --go-grpc_out, --grpc-gateway_out).
GENERATORS = ("go", "go-grpc", "grpc-gateway")


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise ToolMissing("the grpc-gateway row needs Go (https://go.dev/dl/) to build its front end")
    return go


def _run(argv: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> str:
    try:
        result = subprocess.run(
            list(argv), cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
            timeout=INSTALL_TIMEOUT_S, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as error:
        raise ToolMissing(f"`{' '.join(argv)}` did not finish within {INSTALL_TIMEOUT_S} s") from error
    if result.returncode != 0:
        raise ToolMissing(f"`{' '.join(argv)}` failed:\n{(result.stderr or result.stdout).strip()[-3000:]}")
    return result.stdout


def required_versions(go_mod: str) -> dict[str, str]:
    """module -> version of every `require` of a go.mod, in a block or on its own line."""
    versions = {}
    for match in re.finditer(r"^\s*(?:require\s+)?([\w.\-/]+)\s+(v\S+)", go_mod, flags=re.M):
        versions[match.group(1)] = match.group(2)
    return versions


def _plugins() -> list[str]:
    """`package@version` of each protoc plugin, the generated code's runtime versions taken from go.mod."""
    required = required_versions((GO_SOURCE / "go.mod").read_text())
    missing = [module for module in PLUGIN_OF_MODULE if module not in required]
    if missing:
        raise ToolMissing(f"bench/grpcgateway/go.mod requires no version of {', '.join(missing)}")
    return [f"{package}@{required[module]}" for module, package in PLUGIN_OF_MODULE.items()] + [
        PROTOC_GEN_GO_GRPC
    ]


def _googleapis() -> Path:
    """build/googleapis, laid out by protos/generate.py as `make proto-deps` does (one definition)."""
    spec = importlib.util.spec_from_file_location("_protos_generate", PROTO_ROOT / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    path: Path = generate.copy_googleapis()
    return path


def _grpc_tools_protos() -> Path:
    """The well-known types' .proto files that grpcio-tools ships beside its protoc."""
    spec = importlib.util.find_spec("grpc_tools")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "_proto"


def _proto_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.proto"))


def _digest(parts: Sequence[tuple[str, bytes]]) -> str:
    sha = hashlib.sha256()
    for name, data in parts:
        sha.update(f"{name}\0{len(data)}\0".encode())
        sha.update(data)
    return sha.hexdigest()[:16]


def _install_plugins(go: str, plugins: Sequence[str]) -> Path:
    """The plugins, `go install`ed into a folder named after their pins (kept across builds)."""
    folder = BUILD_ROOT / "plugins" / _digest([(p, b"") for p in plugins])
    names = [p.partition("@")[0].rsplit("/", 1)[1] for p in plugins]
    if all((folder / name).is_file() for name in names):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for plugin in plugins:
        _log(f"grpc-gateway row: go install {plugin}")
        _run([go, "install", plugin], env={"GOBIN": str(folder)})
    return folder


def _generate(plugins: Path, googleapis: Path, src: Path) -> None:
    """Go code of our protos into `src`, the package of every file named by an `M` option."""
    ours = _proto_files(PROTO_ROOT)
    mapping = [f"M{name}={GENERATED_PACKAGE}" for name in ours]
    mapping += [f"M{name}={GOOGLEAPIS_PACKAGE}" for name in _proto_files(googleapis)]
    wkt = _grpc_tools_protos()
    argv = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{googleapis}", f"-I{wkt}"]
    for generator in GENERATORS:
        argv += [f"--plugin=protoc-gen-{generator}={plugins / f'protoc-gen-{generator}'}",
                 f"--{generator}_out={src}", f"--{generator}_opt=module={GO_MODULE}"]  # fmt: skip
        argv += [f"--{generator}_opt={m}" for m in mapping]
    _run([*argv, *ours])


def _prepare_source(go: str, folder: Path) -> Path:
    """A copy of bench/grpcgateway with the generated code beside it, in `folder`/src."""
    plugins = _install_plugins(go, _plugins())
    src = folder / "src"
    src.mkdir(parents=True)
    for name in GO_FILES:
        shutil.copyfile(GO_SOURCE / name, src / name)
    _generate(plugins, _googleapis(), src)
    return src


def build_key(go: str) -> str:
    """What the binary is made of: any change here builds it afresh."""
    googleapis = _googleapis()
    parts = [(name, (GO_SOURCE / name).read_bytes()) for name in GO_FILES]
    parts += [(name, (PROTO_ROOT / name).read_bytes()) for name in _proto_files(PROTO_ROOT)]
    parts += [(name, (googleapis / name).read_bytes()) for name in _proto_files(googleapis)]
    parts += [(plugin, b"") for plugin in _plugins()]
    parts += [("go", _run([go, "version"]).encode())]
    parts += [("protoc", importlib.metadata.version("grpcio-tools").encode())]
    parts += [("builder", Path(__file__).read_bytes())]
    return _digest(parts)


def ensure_built() -> Path:
    """The grpc-gateway binary of the current inputs, built if there is none yet; raises ToolMissing."""
    go = _go()
    key = build_key(go)
    binary = BUILD_ROOT / key / BINARY_NAME
    if binary.is_file():
        return binary
    _log(f"grpc-gateway row: building {binary.relative_to(REPO)} (once per change of its inputs)")
    BUILD_ROOT.mkdir(parents=True, exist_ok=True)
    # Built aside, then renamed into place: a run that stops half-way leaves no binary to trust.
    scratch = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=BUILD_ROOT))
    try:
        src = _prepare_source(go, scratch)
        try:
            _run([go, "build", "-trimpath", "-o", str(scratch / BINARY_NAME), "."], cwd=src)
        except ToolMissing as error:
            raise ToolMissing(
                f"{error}\n(after a change of go.mod: python -m bench.gogateway tidy)"
            ) from error
        try:
            scratch.rename(BUILD_ROOT / key)
        except OSError:  # another run built the same key meanwhile: theirs is as good
            shutil.rmtree(scratch, ignore_errors=True)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    _prune(keep=key)
    return binary


def _prune(keep: str) -> None:
    """Builds of earlier inputs: none is used again once the inputs have changed."""
    for entry in BUILD_ROOT.iterdir():
        if entry.is_dir() and entry.name not in (keep, "plugins") and "." not in entry.name:
            shutil.rmtree(entry, ignore_errors=True)


def tidy() -> None:
    """`go mod tidy` over main.go and the generated code; go.mod and go.sum copied back."""
    go = _go()
    with tempfile.TemporaryDirectory(
        prefix="tidy.", dir=BUILD_ROOT if BUILD_ROOT.exists() else None
    ) as scratch:
        src = _prepare_source(go, Path(scratch))
        _run([go, "mod", "tidy"], cwd=src)
        for name in ("go.mod", "go.sum"):
            shutil.copyfile(src / name, GO_SOURCE / name)
    _log("bench/grpcgateway/go.mod and go.sum updated")


def describe() -> str:
    """The grpc-gateway and Go versions the binary is built with, for the table's header."""
    required = required_versions((GO_SOURCE / "go.mod").read_text())
    go = _run([_go(), "version"]).split()
    return f"grpc-gateway {required.get(GATEWAY_MODULE, '?')} ({go[2] if len(go) > 2 else 'go ?'})"


def start(binary: Path, backend: str, log_dir: Path) -> ServerProcess:
    """The built grpc-gateway on a free loopback port, in front of the gRPC server at `backend`."""
    return ServerProcess.start("grpc-gateway", [str(binary), "--port", "0", "--backend", backend], log_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["build"]:
        print(ensure_built())
        return 0
    if args == ["tidy"]:
        tidy()
        return 0
    print("usage: python -m bench.gogateway build|tidy", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
