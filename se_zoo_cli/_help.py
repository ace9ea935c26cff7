"""The help formatter of every ``se-zoo`` subcommand."""
import argparse

__all__ = ['HelpFormatter']


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default in --help, unless it has none worth showing (None, False, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, [], {}, '', argparse.SUPPRESS) or '%(default)' in (action.help or ''):
            return action.help or ''
        return super()._get_help_string(action)
