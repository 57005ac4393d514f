"""The hubfs command's table of subcommands and its answers to bad usage."""
import os
import subprocess

HUBFS = os.environ["HUBFS_BIN"]


def run(*args):
    return subprocess.run([HUBFS, *args], capture_output=True, text=True, timeout=30)


def test_help_lists_every_subcommand():
    result = run("--help")
    assert result.returncode == 0
    for command in ("mount", "inspect", "load"):
        assert f"\n  {command}" in result.stdout


def test_unknown_command_is_refused_with_usage():
    result = run("frobnicate")
    assert result.returncode == 2
    assert "unknown command 'frobnicate'" in result.stderr
    assert "usage: hubfs" in result.stderr


def test_no_arguments_prints_usage_and_fails():
    result = run()
    assert result.returncode == 2
    assert "usage: hubfs" in result.stderr
