from assistant.cli import cli

cli()
