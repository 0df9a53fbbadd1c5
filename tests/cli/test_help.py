"""Every `natlens` subcommand's --help says each option's default, so users need not guess."""

from __future__ import annotations

import argparse

from natlens.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, name: str = "natlens"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield from _parsers(p, f"{name} {sub}")


def test_every_option_with_a_default_says_it():
    missing = []
    for name, parser in _parsers(build_parser()):
        for a in parser._actions:
            if not a.option_strings or a.required or a.default in (None, False, argparse.SUPPRESS):
                continue
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction)):
                continue
            if "default" not in (a.help or ""):
                missing.append(f"{name} {a.option_strings[0]} (default {a.default!r})")
    assert not missing, "options whose help hides the default: " + "; ".join(missing)


def test_every_option_has_help():
    bare = [f"{name} {a.option_strings[0]}" for name, parser in _parsers(build_parser())
            for a in parser._actions if a.option_strings and not a.help]
    assert not bare, "options without help: " + ", ".join(bare)
