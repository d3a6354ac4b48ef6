#!/usr/bin/env python
"""Django's command-line utility for kviz."""

import os
import sys


def main():
    if sys.argv[1:3] == ["kviz", "analyze"]:
        # The analysis needs no database or app registry: skip Django's start-up.
        from captures.cli.analyze import exit_now
        from captures.cli.analyze import main as analyze

        exit_now(analyze(sys.argv[3:]))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kviz.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
