"""What a site said reaches the operator's terminal as text (fifth review of issue 22): an escape sequence
in a file name postgres made in its repository could erase or forge lines, and Rich markup in it crashed
the table."""

from __future__ import annotations

from types import SimpleNamespace

from lpse_ops import terminal
from lpse_ops.commands import _options


def test_site_text_with_an_escape_sequence_and_markup_prints_as_text(capsys):
    said = "invalid checksum 'x\x1b[1A\x1b[2K[/red][bold]forged'"
    state = SimpleNamespace(messages=[said], status="failed", ok=1, changed=0, failed=1, unreachable=0)
    result = SimpleNamespace(result="failed", duration_s=1.0, run_id=7, artifact_dir="/tmp/a",
                             tracker=SimpleNamespace(hosts={"site1": state}))
    _options.render(result, "backup verify")
    terminal.warn(said)
    out, err = capsys.readouterr()
    assert "\x1b[1A" not in out + err and "\x1b[2K" not in out + err
    assert "?[1A?[2K[/red][bold]forged" in out.replace("\n", "").replace(" ", "").replace("│", "") or \
        "[/red][bold]forged" in out, out
    assert "[/red][bold]forged" in err, err
