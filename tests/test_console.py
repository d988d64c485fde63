from __future__ import annotations

from pathlib import Path

from tfod.console import log_tail


def test_log_tail_gives_a_logs_last_lines_or_says_there_is_none(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text("".join(f"line {i}\n" for i in range(30)) + "[bad] \xff\n", encoding="latin-1")
    assert log_tail(log, lines=3) == "line 28\nline 29\n[bad] \ufffd"
    log.write_text("")
    assert log_tail(log) == "(the log is empty)"
    assert log_tail(tmp_path / "missing.log").startswith("(no log: No such file")
