"""One module per `python -m mlworker` command."""
