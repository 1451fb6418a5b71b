"""The prompt options that every command encoding with a sentence-transformers model shares."""
from __future__ import annotations

import argparse


def add_prompt_arguments(parser: argparse.ArgumentParser, where: str = "") -> None:
    """``--query-prompt`` / ``--passage-prompt``; None means the model's own prompts (``where``: e.g. ' in training')."""
    parser.add_argument("--query-prompt", default=None,
                        help=f"text put before each query{where}, e.g. 'query: ' (default: the model's own 'query' "
                             "prompt, if it has one; '' for none)")
    parser.add_argument("--passage-prompt", default=None,
                        help=f"text put before each candidate{where}, e.g. 'passage: ' (default: the model's own "
                             "'passage', else 'document' prompt, if it has one; '' for none)")
