"""`python manage.py kviz SUBCOMMAND ...`: one entry point, one small module per subcommand.

Each module in captures/cli/ exposes `add_arguments(parser)` and `run(options, out, err) -> int`.
"""

import importlib

from django.core.management.base import BaseCommand, CommandError

SUBCOMMANDS = {
    "analyze": "captures.cli.analyze",
    "demo": "captures.cli.demo",
    "diff": "captures.cli.diff",
    "lab": "captures.cli.lab",
    "token": "captures.cli.token",
}


class Command(BaseCommand):
    help = "kviz tools: analyze captures, run the network-namespace lab."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="subcommand", required=True)
        for name, module_name in SUBCOMMANDS.items():
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name != module_name:
                    raise
                continue  # a subcommand not shipped in this build
            module.add_arguments(sub.add_parser(name, help=module.__doc__.strip().splitlines()[0]))

    def handle(self, *args, **options):
        module = importlib.import_module(SUBCOMMANDS[options["subcommand"]])
        code = module.run(options, self.stdout, self.stderr)
        if code:
            raise CommandError(f"kviz {options['subcommand']} failed", returncode=code)
