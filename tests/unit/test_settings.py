"""The one settings schema: typed values, errors that name the variable, a document that cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from lpse_ops import config, settings
from lpse_ops.main import main

ROOT = Path(__file__).resolve().parents[2]


def test_settings_load_empty_environment_gives_documented_defaults():
    found = settings.load({})

    assert found.home is None and found.yes is False and found.smtp_port is None
    assert found.s3_views_bucket == "lpse-restore-views" and found.lab_name == "lpse-lab" and found.lab_sites == 3


def test_settings_load_typed_values():
    found = settings.load({"LPSE_OPS_HOME": "~/lpse", "LPSE_OPS_SMTP_PORT": " 2525 ", "LPSE_OPS_YES": "On",
                           "LPSE_OPS_SMTP_STARTTLS": "REQUIRE", "LPSE_OPS_STATE_URL": ""})

    assert found.home == Path.home() / "lpse"
    assert (found.smtp_port, found.yes, found.smtp_starttls, found.state_url) == (2525, True, "require", None)


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("LPSE_OPS_SMTP_PORT", "twenty-five", "is not a whole number"),
    ("LPSE_OPS_SMTP_PORT", "70000", "out of range"),
    ("LPSE_OPS_YES", "maybe", "is not a yes/no value"),
    ("LPSE_OPS_SMTP_STARTTLS", "sometimes", "is not one of auto, require, off"),
])
def test_settings_load_bad_value_error_names_the_variable(name: str, value: str, expected: str):
    with pytest.raises(settings.SettingsError) as caught:
        settings.load({name: value, "LPSE_OPS_ACTOR": "ok"})

    assert str(caught.value).startswith(f"{name}: ") and expected in str(caught.value)
    assert list(caught.value.problems) == [name]
    assert caught.value.partial.actor == "ok"


def test_settings_load_reports_every_bad_variable_at_once():
    with pytest.raises(settings.SettingsError) as caught:
        settings.load({"LPSE_OPS_YES": "maybe", "LPSE_OPS_LAB_SITES": "x"})

    assert set(caught.value.problems) == {"LPSE_OPS_YES", "LPSE_OPS_LAB_SITES"}


def test_settings_secrets_hidden_from_repr_and_public():
    found = settings.load({"LPSE_OPS_SMTP_PASSWORD": "pw-123", "LPSE_OPS_S3_SECRET_KEY": "sk-456",
                           "LPSE_OPS_BUNDLE_KEY_PASSPHRASE": "pp-789", "LPSE_OPS_SMTP_USER": "u"})

    for secret in ("pw-123", "sk-456", "pp-789"):
        assert secret not in repr(found) and secret not in str(found.public())
    assert found.public()["LPSE_OPS_SMTP_PASSWORD"] == "<hidden>" and found.public()["LPSE_OPS_SMTP_USER"] == "u"


def test_settings_current_follows_environment_changes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("LPSE_OPS_HOME", str(tmp_path / "one"))
    assert config.home() == tmp_path / "one"
    monkeypatch.setenv("LPSE_OPS_HOME", str(tmp_path / "two"))
    assert config.home() == tmp_path / "two"
    monkeypatch.setenv("LPSE_OPS_ACTOR", "someone@desk")
    assert config.actor() == "someone@desk"


def test_settings_unknown_names_suggest_the_closest():
    found = settings.unknown({"LPSE_OPS_INVENTROY": "x", "LPSE_OPS_HOME": "y", "PATH": "/bin"})

    assert found == {"LPSE_OPS_INVENTROY": "LPSE_OPS_INVENTORY"}


def test_settings_doc_table_matches_schema():
    text = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")

    assert settings.document(text) == text, "docs/settings.md is stale: run `python -m lpse_ops.settings`"
    for name in settings.names():
        assert f"| `{name}` |" in text


def test_settings_schema_covers_every_variable_the_project_mentions():
    sources = [ROOT / "README.md"] + [path for folder in ("cli", "scripts", "tests", "docs")
                                      for path in (ROOT / folder).rglob("*")]
    mentioned: set[str] = set()
    for path in sources:
        if path.suffix in (".py", ".sh", ".md", ".ini", ".yml", ".yaml") and path.is_file() \
                and path.resolve() != Path(__file__).resolve():  # this file spells names wrong on purpose
            mentioned |= set(re.findall(r"\bLPSE_OPS_[A-Z0-9_]*[A-Z0-9]\b", path.read_text(errors="replace")))
    mentioned.discard("LPSE_OPS_SMTP")  # the prefix, as in "LPSE_OPS_SMTP_{name}"
    assert mentioned - set(settings.names()) == set()


def test_cli_bad_setting_exits_1_naming_the_variable():
    result = CliRunner().invoke(main, ["runs", "list"], env={"LPSE_OPS_SMTP_PORT": "x"})

    assert result.exit_code == 1, result.output
    assert "LPSE_OPS_SMTP_PORT: 'x' is not a whole number" in result.output


def test_cli_misspelled_setting_warns_once_with_closest_name():
    result = CliRunner().invoke(main, ["runs", "list"], env={"LPSE_OPS_STATE_ULR": "sqlite://"})

    assert result.exit_code == 0, result.output
    assert result.output.count("LPSE_OPS_STATE_ULR is not an lpse-ops setting") == 1
    assert "did you mean LPSE_OPS_STATE_URL?" in result.output


def test_yes_option_default_comes_from_settings(monkeypatch: pytest.MonkeyPatch):
    import click

    from lpse_ops.commands._options import yes_option

    @click.command()
    @yes_option("testing")
    def command(yes: bool) -> None:
        click.echo(f"yes={yes}")

    assert CliRunner().invoke(command, [], env={"LPSE_OPS_YES": "1"}).output == "yes=True\n"
    assert CliRunner().invoke(command, [], env={"LPSE_OPS_YES": "off"}).output == "yes=False\n"
    bad = CliRunner().invoke(command, [], env={"LPSE_OPS_YES": "maybe"})
    assert bad.exit_code == 1 and "LPSE_OPS_YES" in bad.output
