"""The README's configuration reference is generated from the config dataclasses and must not be stale."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ntf_server.cli import main
from ntf_server.config import Config, reference as configdoc

README = Path(__file__).resolve().parents[1] / "README.md"


def _keys(section: object, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(section):  # type: ignore[arg-type]
        value = getattr(section, f.name)
        if f.name == "config_dir":
            continue
        if dataclasses.is_dataclass(value):
            out += _keys(value, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def test_readme_reference_is_up_to_date() -> None:
    current = configdoc.section_in(README.read_text())
    assert current is not None, "README.md lost its config-reference markers"
    assert current == configdoc.render_reference(), (
        "README.md's configuration reference is stale: run `ntf-server config-reference --update README.md`"
    )


def test_every_key_is_in_the_reference() -> None:
    ref = configdoc.render_reference()
    sections = {k.rsplit(".", 1)[0] for k in _keys(Config(config_dir=Path())) if "." in k}
    for key in _keys(Config(config_dir=Path())):
        section, name = key.rsplit(".", 1)
        assert f"### `[{section}]`" in ref
        assert f"| `{name}` |" in ref
    assert len(sections) > 5


def test_update_rewrites_only_the_generated_part(tmp_path: Path, capsys: object) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{configdoc.START}\nold text\n{configdoc.END}\n\nafter\n")
    assert main(["config-reference", "--update", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "old text" not in text and configdoc.section_in(text) == configdoc.render_reference()
    assert main(["config-reference", "--update", str(readme)]) == 0  # second run: nothing to change
    assert readme.read_text() == text


def test_update_without_markers_is_a_clear_error(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert main(["config-reference", "--update", str(readme)]) == 1
    assert readme.read_text() == "# no markers\n"
