"""`minmax-engine sql` and `export`: storage's commands with the game's views registered.

Storage knows the log's generic views; what a game metric means is the engine's
(engine/outcomes.py), so these commands hand storage the `metrics` view to create.
"""

from __future__ import annotations

import argparse

from engine.outcomes import game_views
from storage import commands

add_sql_arguments = commands.add_sql_arguments
add_export_arguments = commands.add_export_arguments


def run_sql(args: argparse.Namespace) -> int:
    return commands.run_sql(args, extra_views=game_views())


def run_export(args: argparse.Namespace) -> int:
    return commands.run_export(args, extra_views=game_views())
