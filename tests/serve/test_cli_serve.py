"""`vcdm serve`: the verb's checks, and the warning when it listens beyond this machine."""

import pytest

from vcdm.cli import main

uvicorn = pytest.importorskip("uvicorn")


@pytest.fixture
def served(monkeypatch):
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    return calls


def test_serve_binds_to_localhost_and_warns_otherwise(mnist_run, served, capsys):
    assert main(["serve", str(mnist_run)]) == 0
    (app, kw), out = served[-1], capsys.readouterr()
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8000 and "warning" not in out.err
    assert list(app.state.server.runs) == ["mnist"] and "http://127.0.0.1:8000/" in out.out
    assert main(["serve", str(mnist_run), str(mnist_run), "--host", "0.0.0.0", "--port", "8123"]) == 0
    (app, kw), out = served[-1], capsys.readouterr()
    assert kw["host"] == "0.0.0.0" and "warning: listening on 0.0.0.0" in out.err
    assert list(app.state.server.runs) == ["mnist", "mnist-2"]


@pytest.mark.parametrize(
    "argv, message",
    [(["--port", "0"], "--port must be in"), (["--max-steps", "0"], "--max-steps must be >= 1")],
)
def test_serve_refuses_bad_flags(mnist_run, served, capsys, argv, message):
    assert main(["serve", str(mnist_run), *argv]) == 2
    assert message in capsys.readouterr().err and not served


def test_serve_refuses_a_folder_that_is_not_a_run(tmp_path, served, capsys):
    assert main(["serve", str(tmp_path)]) == 2
    assert "not a vcdm run" in capsys.readouterr().err
