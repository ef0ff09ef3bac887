"""docs/architecture.md names every module of cl/ and strategies/, so it stays current."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_module_is_named_in_the_architecture_doc():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = []
    for d in ("cl", "strategies"):
        for path in sorted((ROOT / d).rglob("*.py")):
            rel = path.relative_to(ROOT)
            is_package = path.name == "__init__.py" and rel.parent != Path(d)
            name = f"{rel.parent.as_posix()}/" if is_package else rel.as_posix()
            if f"`{name}`" not in doc:
                missing.append(name)
    assert missing == [], f"add a line for each to docs/architecture.md: {missing}"


def test_the_readme_links_it():
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()
