from dgc_cli.cli import app

app()
