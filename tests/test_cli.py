import subprocess
import sys

import pytest

from common.cli import TRACEBACK_ENV, _error_hook
from common.config import ConfigError
from common.data import DataFormatError
from common.testing import repo_env


def _raised(exc: BaseException) -> tuple:
    try:
        raise exc
    except BaseException as e:  # noqa: BLE001 - the hook gets whatever escaped
        return type(e), e, e.__traceback__


def test_user_error_is_one_message_without_traceback(capsys, monkeypatch):
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    _error_hook(*_raised(DataFormatError("features.h5: vid7: 3 NaN value(s)")))
    err = capsys.readouterr().err
    assert err.startswith("error: DataFormatError: features.h5: vid7: 3 NaN value(s)\n")
    assert "Traceback" not in err


@pytest.mark.parametrize("exc,env", [(RuntimeError("a bug"), None), (ConfigError("c.yaml"), "1")])
def test_bugs_and_the_switch_keep_the_traceback(exc, env, capsys, monkeypatch):
    if env is None:
        monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    else:
        monkeypatch.setenv(TRACEBACK_ENV, env)
    _error_hook(*_raised(exc))
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_a_parsed_script_exits_1_with_the_message():
    code = ("from common.cli import base_parser, parse; parse(base_parser('x'), []); "
            "from common.config import ConfigError; raise ConfigError('c.yaml: bad')")
    env = repo_env()
    env.pop(TRACEBACK_ENV, None)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 1 and p.stderr.startswith("error: ConfigError: c.yaml: bad\n"), p.stderr


def test_tool_parser_prologue():
    from common.cli import REPO_ROOT, tool_parser

    a = tool_parser("doc", "pros").parse_args(["--set", "a.b=1", "--set", "c=2", "--data-root", "/d"])
    assert (a.config, a.overrides, a.data_root) == (str(REPO_ROOT / "pros" / "configs" / "synthetic.yaml"),
                                                   ["a.b=1", "c=2"], "/d")
    b = tool_parser(None, data_root=False).parse_args([])
    assert b.config is None and b.overrides == [] and not hasattr(b, "data_root")
