"""Entry points: each `python -m jobs.<name>`, and each a subcommand of the `aosa` command."""
