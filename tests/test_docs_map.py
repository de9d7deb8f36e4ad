"""The docs' map of the code must not rot: every file they name exists, and
every name they put beside a file is defined in it."""

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAPPED_DOCS = [ROOT / "docs" / "protocol.md", ROOT / "README.md"]

PATH = re.compile(r"fedscore/[\w/]+\.py")
IDENTIFIER = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)?")
SPAN = re.compile(r"`([^`\n]+)`")
# What may stand between a file and the names given beside it: `a.py` `f` (`g`, `h`).
BESIDE = re.compile(r"[\s,()]*")
FILE_SUFFIXES = {"bin", "csv", "html", "json", "key", "md", "pem", "py", "sqlite", "toml"}


def paragraphs(text: str) -> list[str]:
    """Table rows and prose paragraphs, outside code fences (a name belongs to the file of its row or paragraph)."""
    blocks, current, fenced = [], [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            continue
        if line.startswith("|") or not line.strip():
            blocks.append(" ".join(current))
            current = []
            if line.startswith("|"):
                blocks.append(line)
        else:
            current.append(line)
    blocks.append(" ".join(current))
    return [block for block in blocks if block]


def named_paths(text: str) -> set[str]:
    """Every fedscore/...py path a doc names, code blocks included."""
    return set(PATH.findall(text))


def names_beside_paths(text: str) -> list[tuple[str, str]]:
    """(path, name) for each backticked name that follows a backticked path with only separators between."""
    pairs = []
    for block in paragraphs(text):
        path, previous_end = None, 0
        for span in SPAN.finditer(block):
            content = span.group(1)
            between = block[previous_end:span.start()]
            previous_end = span.end()
            if PATH.fullmatch(content):
                path = content
            elif path and BESIDE.fullmatch(between) and IDENTIFIER.fullmatch(content):
                pairs.append((path, content))
            else:
                path = None
    return pairs


@cache
def definitions(path: str) -> dict[str, set[str]]:
    """Top-level and class-level names of a module: {name: attributes defined on it (methods, fields)}."""
    tree = ast.parse((ROOT / path).read_text())
    found: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            found.setdefault(node.name, set()).update(class_attributes(node))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.setdefault(node.name, set())
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    found.setdefault(target.id, set())
    return found


def class_attributes(node: ast.ClassDef) -> set[str]:
    names = set()
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(item.name)
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            names.add(item.target.id)
        elif isinstance(item, ast.Assign):
            names.update(t.id for t in item.targets if isinstance(t, ast.Name))
    return names


def is_defined(path: str, name: str) -> bool:
    found = definitions(path)
    owner, _, attribute = name.partition(".")
    if not attribute:
        return owner in found
    if owner == Path(path).stem:  # `paillier.add_plains` beside fedscore/crypto/paillier.py
        return attribute in found
    return attribute in found.get(owner, set())


def qualified_names(text: str) -> set[str]:
    """Every backticked `Class.method` or `module.function` of a doc whose class or module is fedscore's
    (file names such as `ca.pem` and gRPC names such as `Scoring.Score` start with neither)."""
    return {span for span in SPAN.findall(text) if IDENTIFIER.fullmatch(span) and "." in span
            and span.rpartition(".")[2] not in FILE_SUFFIXES and owners(span)}


@cache
def code_files() -> tuple[str, ...]:
    return tuple(str(path.relative_to(ROOT)) for path in sorted((ROOT / "fedscore").rglob("*.py"))
                 if "proto" not in path.parts)


def owners(name: str) -> list[str]:
    """The modules that define the class, or are the module, a qualified name starts with."""
    owner = name.partition(".")[0]
    return [path for path in code_files() if owner in definitions(path) or Path(path).stem == owner]


def defined_somewhere(name: str) -> bool:
    return any(is_defined(path, name) for path in owners(name))


def doc_cases() -> list:
    return [pytest.param(doc, id=doc.name) for doc in MAPPED_DOCS]


@pytest.mark.parametrize("doc", doc_cases())
def test_every_named_file_exists(doc):
    missing = sorted(path for path in named_paths(doc.read_text()) if not (ROOT / path).is_file())
    assert not missing, f"{doc.name} names files that do not exist: {missing}"


@pytest.mark.parametrize("doc", doc_cases())
def test_every_name_beside_a_file_is_defined_there(doc):
    pairs = names_beside_paths(doc.read_text())
    undefined = [f"{path} `{name}`" for path, name in pairs if (ROOT / path).is_file() and not is_defined(path, name)]
    assert not undefined, f"{doc.name} puts names beside files that do not define them: {undefined}"


@pytest.mark.parametrize("doc", doc_cases())
def test_every_qualified_name_is_defined(doc):
    undefined = sorted(name for name in qualified_names(doc.read_text()) if not defined_somewhere(name))
    assert not undefined, f"{doc.name} names methods or functions no module defines: {undefined}"


def test_the_map_is_read_as_meant():
    """The reader must see names beside a path, and only those, or the tests above check nothing."""
    text = "| x | `fedscore/a.py` `f`, `B.g` (`h`); then `i`, and `fedscore/b.py`; `fedscore/c.py` `j` |"
    assert names_beside_paths(text) == [("fedscore/a.py", "f"), ("fedscore/a.py", "B.g"),
                                        ("fedscore/a.py", "h"), ("fedscore/c.py", "j")]
    protocol_pairs = names_beside_paths((ROOT / "docs" / "protocol.md").read_text())
    assert ("fedscore/protocol/training/driver.py", "run_training") in protocol_pairs
    assert is_defined("fedscore/crypto/paillier.py", "paillier.add_plains")
    assert not is_defined("fedscore/crypto/paillier.py", "paillier.no_such_operation")
    assert defined_somewhere("LedgerMember.abandon_uncommitted")
    assert not defined_somewhere("LedgerMember.no_such_method")
