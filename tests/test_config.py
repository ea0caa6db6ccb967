import re

import fastopt


def test_show_config_lists_backends_isa_and_threads(capsys):
    fastopt.show_config()
    out = capsys.readouterr().out
    assert re.search(r"CPU kernels: ISA (baseline|avx2|avx512)", out)
    assert re.search(r"\d+ threads", out)
    for name in fastopt.backends.REGISTRY:
        assert re.search(rf"^\s+{name}\s+(yes|no)", out, re.M), name


def test_unavailable_backend_says_why(monkeypatch):
    import pytest

    cpu = fastopt.backends.get("cpu")
    monkeypatch.setattr(cpu, "available", lambda: (False, "not built here"))
    with pytest.raises(fastopt.backends.BackendUnavailable, match="not built here"):
        fastopt.backends.resolve("cpu", "cpu")
    # automatic choice falls back to the next CPU backend
    assert fastopt.backends.resolve(None, "cpu").name != "cpu"
