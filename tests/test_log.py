"""The project's logging: once per job (rank zero), a rank's own messages marked with its rank."""

from __future__ import annotations

from lightning.fabric.utilities.rank_zero import rank_zero_only

from lit_gpt_mini.log import EVERY_RANK, get_logger


def test_messages_print_once_per_job(capsys, monkeypatch):
    log = get_logger("data_modules.example")
    log.info("prepared 3 documents")
    log.warning("2 rows skipped")
    err = capsys.readouterr().err
    assert "prepared 3 documents\n" in err
    assert "warning: 2 rows skipped\n" in err

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    log.info("from rank one")
    log.info("my own disk is full", extra=EVERY_RANK)
    err = capsys.readouterr().err
    assert "from rank one" not in err
    assert "[rank 1] my own disk is full" in err
